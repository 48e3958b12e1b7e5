"""The stage runner every experiment is wired on: data -> cache -> train stage(s) -> evaluate -> report -> export.

A few composable functions, one per step, so an experiment module is its config dataclasses plus
the order of its stages (see ``docs/architecture.md``, "How to write an experiment"):

==================================  =====================================================================
step                                function
==================================  =====================================================================
data                                :func:`load_cases` (loader by name, ``max_cases``), :func:`seeded_split`
cache                               :func:`case_cache` + :func:`prepare_cases` (deterministic preprocessing, once)
train one stage                     :func:`train_stage` (any ``build_model`` and ``(x, y)``/dict datasets:
                                    segmentation, detection, 2D, 2.5D, 3D) and :func:`segmentation_stage`
                                    (a registry network on a :class:`~tfmedseg.data.geometry.SliceGeometry`
                                    or :class:`~tfmedseg.data.geometry.PatchGeometry`, augmentation on the
                                    device); both live in :mod:`tfmedseg.training.stages`
evaluate                            :func:`evaluate_cases`: one :class:`CaseOutcome` per case -> :class:`Evaluation`
report                              :func:`write_tables` (per-case CSV, seed-layout summary, extra sections,
                                    montage) and :func:`write_summary_json`
export                              :func:`export_stage` (run-dir contract + representative samples),
                                    :func:`next_export_dir` (``<root>/<name>/<version>``), :func:`export_once`
                                    (no second version of the same weights); from :mod:`tfmedseg.export.versions`
==================================  =====================================================================

Nothing here knows a dataset, a network or a seed: experiments pass those in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from tfmedseg.datasets.case import released_after
from tfmedseg.errors import ConfigError
from tfmedseg.export.versions import export_once, next_export_dir
from tfmedseg.training.stages import (
    DetectionStage,
    SegmentationStage,
    StageResult,
    segmentation_stage,
    steps_for,
    train_stage,
)

__all__ = [
    "DetectionStage",
    "SegmentationStage",
    "StageResult",
    "CaseOutcome",
    "Evaluation",
    "load_cases",
    "seeded_split",
    "case_cache",
    "prepare_cases",
    "steps_for",
    "train_stage",
    "segmentation_stage",
    "evaluate_cases",
    "write_tables",
    "write_summary_json",
    "export_stage",
    "next_export_dir",
    "export_once",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data and cache
def load_cases(dataset: str, data_dir, max_cases: int = 0) -> list:
    """The dataset's cases (:func:`tfmedseg.datasets.load_dataset`), the first ``max_cases`` if > 0."""
    from tfmedseg.datasets import load_dataset

    cases = load_dataset(dataset, data_dir)
    return cases[:max_cases] if max_cases else cases


def seeded_split(items: Sequence, fraction: float, seed: int, *, keep_one: bool = True) -> tuple[list, list]:
    """``(train, validation)``: a seeded permutation's first ``round(fraction * n)`` (at least 1) items
    are the validation set.

    Raises:
        ConfigError: No item would be left for training (``keep_one``: the validation set is cut to
            ``n - 1`` instead).
    """
    n = len(items)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    if keep_one:
        n_val = min(n - 1, n_val)
    if n - n_val < 1:
        raise ConfigError(f"{n} case(s) leave none for training", path="validation_fraction")
    val_idx = set(order[:n_val].tolist())
    return [c for i, c in enumerate(items) if i not in val_idx], [c for i, c in enumerate(items) if i in val_idx]


def case_cache(ctx, name: str, preprocessing: Mapping[str, Any]):
    """The preprocessed-array cache of experiment ``name`` (:class:`~tfmedseg.preprocessing.cache.CaseCache`).

    Phantoms cache beside the phantoms (``<data_dir>/../.<data_dir name>-cache/<name>``, reused by
    every run on them); real data caches in the run directory (``<output_dir>/cache/<name>``), never
    inside the dataset. The ``preprocessing`` settings' hash names the cache, so changing them
    rebuilds it.
    """
    from tfmedseg.preprocessing.cache import CaseCache

    data_dir = Path(ctx.data_dir)
    root = data_dir.parent / f".{data_dir.name}-cache" if ctx.used_phantoms else Path(ctx.output_dir) / "cache"
    return CaseCache(root / name, dict(preprocessing))


def prepare_cases(cases: Sequence, cache, build: Callable[[Any], tuple]) -> dict[str, dict[str, Any]]:
    """Preprocess every case once through ``cache``: ``{case_id: {array name: streamed array}}``.

    Args:
        cases: Dataset cases (``case_id`` attribute; lazily read ones are released after each).
        cache: A :class:`~tfmedseg.preprocessing.cache.CaseCache`.
        build: ``case -> (arrays, spacing, meta)`` run for cases not in the cache yet.

    Returns:
        Per case its arrays as :class:`~tfmedseg.preprocessing.cache.CachedArray` s: read from the
        cache file on demand (indexing along axis 0 reads those slices, ``np.asarray`` the whole
        array), so neither building nor holding the result keeps more than one case in memory; a
        rerun (or a run interrupted mid-way) builds only the cases not cached yet.

    Progress is shown (:func:`tfmedseg.progress.progress`); cached cases are not rebuilt.
    """
    built = 0
    for case in released_after(cases, desc="preprocessing (cached)"):
        built += cache.ensure(case.case_id, lambda c=case: build(c))
    logger.info("cache %s: %d case(s) built, %d reused", cache.directory, built, len(cases) - built)
    return {case.case_id: cache.lazy_arrays(case.case_id) for case in cases}


# ----------------------------------------------------------------------------- evaluation
@dataclasses.dataclass
class CaseOutcome:
    """What evaluating one case gives.

    Attributes:
        row: The per-case report row (one CSV line).
        overlay: A montage tile (:class:`tfmedseg.reports.OverlayItem`), or None.
        seconds: Prediction time (excluding the metrics).
        units: Units predicted (slices of a volume, 1 for an image), for seconds per unit.
        extra: Anything the experiment pools afterwards (predictions, references, ...).
    """

    row: dict[str, Any]
    overlay: Any = None
    seconds: float = 0.0
    units: int = 1
    extra: Any = None


@dataclasses.dataclass
class Evaluation:
    """All cases' outcomes: ``rows``, up to ``max_overlays`` ``overlays``, total ``seconds`` and
    ``units``, and each outcome (for pooled metrics)."""

    rows: list[dict[str, Any]]
    overlays: list
    seconds: float
    units: int
    outcomes: list[CaseOutcome]

    @property
    def seconds_per_unit(self) -> float:
        return self.seconds / max(1, self.units)


def evaluate_cases(cases: Iterable, evaluate_one: Callable[[Any], CaseOutcome], *, max_overlays: int = 8,
                   what: str = "case") -> Evaluation:
    """Evaluate every case with ``evaluate_one`` (prediction + per-case row), with progress
    (:func:`tfmedseg.progress.progress`; ``what`` names the unit: ``case``, ``view``); each case's
    lazily read voxels are released after it."""
    cases = list(cases)
    rows, overlays, outcomes, seconds, units = [], [], [], 0.0, 0
    for case in released_after(cases, desc=f"evaluating {what}s", unit=what):
        outcome = evaluate_one(case)
        rows.append(outcome.row)
        outcomes.append(outcome)
        seconds += outcome.seconds
        units += outcome.units
        if outcome.overlay is not None and len(overlays) < max_overlays:
            overlays.append(outcome.overlay)
        logger.debug("evaluated %s %s in %.2f s", what, outcome.row.get("case", ""), outcome.seconds)
    return Evaluation(rows, overlays, seconds, units, outcomes)


# ----------------------------------------------------------------------------- report
def write_tables(out_dir, rows: Sequence[Mapping[str, Any]], layout, *, title: str, group_by: str = "model",
                 overlays: Sequence = (), sections: Sequence[str] = (), show: bool = True,
                 summary_rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Path]:
    """Per-case CSV, the summary table in ``layout`` (:func:`tfmedseg.reports.write_report`; of
    ``summary_rows`` when given, else of ``rows``) followed by the markdown ``sections``, and the
    montage; ``show`` prints ``summary.md`` (the run's final table)."""
    from tfmedseg.reports import write_report

    paths = write_report(out_dir, rows, layout=layout, group_by=group_by, overlays=overlays, title=title,
                         sections=sections, summary_rows=summary_rows)
    if show:
        print("\n" + paths["summary"].read_text())
    return paths


def write_summary_json(out_dir, summary: Mapping[str, Any], **extra: Any) -> Path:
    """``summary.json``: ``{"summary": summary, **extra}`` (NaN kept as JSON NaN, paths as strings)."""
    path = Path(out_dir) / "summary.json"
    path.write_text(json.dumps({"summary": dict(summary), **extra}, indent=2, default=str))
    return path


# ----------------------------------------------------------------------------- export
def export_stage(model, run_dir, spec, info: Mapping[str, Any], samples=None, *, max_batches: int = 8) -> Path:
    """Write the export contract of a trained network (:func:`tfmedseg.export.run_dir.save_for_export`).

    Args:
        model: The inference network.
        run_dir: Directory of ``model.keras``, ``serving_spec.json``, ``export_info.json``.
        spec: Its :class:`~tfmedseg.inference.spec.ServingSpec`.
        info: Extras for ``metadata.json`` (seed, config hash, metrics, stage).
        samples: Optional dataset of ``(x, y)`` batches; the first ``max_batches`` become the
            representative inputs and labels (int8 calibration, TFLite Dice checks).
    """
    from tfmedseg.export.run_dir import save_for_export

    rep = rep_labels = None
    if samples is not None:
        batches = list(samples.take(max_batches))
        rep = np.concatenate([np.asarray(x) for x, _ in batches])
        rep_labels = np.concatenate([np.asarray(y) for _, y in batches])
    return save_for_export(model, run_dir, spec, dict(info), representative=rep, representative_labels=rep_labels)
