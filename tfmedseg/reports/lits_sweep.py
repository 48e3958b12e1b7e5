"""Seed 002's comparison tables (Tables 4.2-4.7, Table 4.8's models marked) from sweep rows.

A sweep row (one encoder configuration, :mod:`tfmedseg.experiments.sweep`) is a flat dict:
``model`` (registry name, ``mobilenetv2_2d`` ...), ``variant`` (``top``/``default``/``bottom``),
``macs_m`` / ``params_m`` (at the thesis' input size), the tumour stage's ``train_s_per_slice``
/ ``predict_s_per_slice`` (``_std``; ``t / b``, ``t / (b z)``), and the evaluation scores
``stage 2 tumour Dice/case`` ..., ``stage 2 tumour Dice small`` ..., ``tumour Dice/case`` ... (the
cascade), ``swa stage 2 tumour Dice/case`` when an SWA candidate was evaluated.
:func:`sweep_report` renders every configuration of the sweep (pending ones as ``pending``)
beside the thesis' figures (:data:`THESIS`, spec ``seed-002-liver-2d3d.md`` Sec. 4).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from tfmedseg.reports.tables import format_number, markdown_table

__all__ = ["NETWORKS", "VARIANTS", "NETWORK_LABELS", "THESIS", "TABLE_4_8", "sweep_row", "sweep_report"]

#: The seven networks of Tables 4.2 (2D) and 4.3 (3D), in the thesis' order.
NETWORKS = ("mobilenetv2_2d", "mobilenetv3_2d", "shufflenetv2_2d", "mobilenetv2_3d", "mobilenetv3_3d",
            "shufflenetv2_3d", "dsts_3d")
VARIANTS = ("top", "default", "bottom")
NETWORK_LABELS = {"mobilenetv2": "MobileNet-V2", "mobilenetv3": "MobileNet-V3", "shufflenetv2": "ShuffleNet-V2",
                  "dsts": "DSTS"}

#: (network, variant) -> thesis figures: MMACs, M params (Tables 4.2/4.3; ptflops "FLOPs" are MACs),
#: train and predict seconds per slice mean, sd (Tables 4.4/4.5; NA where the thesis has none) and
#: tumour Dice small / medium / large (Tables 4.6/4.7; the 3D DSTS rows have no 2D counterpart).
THESIS: dict[tuple[str, str], dict[str, Any]] = {}


def _add(network, variant, macs, params, train, predict, sizes):
    THESIS[(network, variant)] = {"macs_m": macs, "params_m": params, "train": train, "predict": predict, "sizes": sizes}


_NA = (math.nan, math.nan)
_add("mobilenetv2_2d", "top", 107.14, 4.64, (0.345, 0.047), (0.114, 0.039), (0.233, 0.470, 0.615))
_add("mobilenetv2_2d", "default", 123.89, 3.76, (0.237, 0.014), (0.072, 0.001), (0.079, 0.182, 0.631))
_add("mobilenetv2_2d", "bottom", 104.80, 6.37, (0.292, 0.038), (0.086, 0.009), (0.065, 0.293, 0.608))
_add("mobilenetv3_2d", "top", 103.01, 4.47, (0.242, 0.024), (0.079, 0.007), (0.134, 0.405, 0.548))
_add("mobilenetv3_2d", "default", 113.72, 3.64, (0.227, 0.001), (0.068, 0.001), (0.140, 0.418, 0.597))
_add("mobilenetv3_2d", "bottom", 103.06, 7.80, (0.303, 0.004), (0.090, 0.002), (0.104, 0.337, 0.671))
_add("shufflenetv2_2d", "top", 118.93, 1.44, (0.362, 0.076), (0.099, 0.005), (0.163, 0.385, 0.581))
_add("shufflenetv2_2d", "default", 122.31, 1.29, (0.295, 0.031), (0.083, 0.009), (0.058, 0.339, 0.617))
_add("shufflenetv2_2d", "bottom", 122.13, 1.47, (0.355, 0.037), (0.105, 0.021), (0.143, 0.381, 0.529))
_add("mobilenetv2_3d", "top", 64.28, 1.26, (1.15, 0.039), (0.428, 0.0194), (0.195, 0.455, 0.646))
_add("mobilenetv2_3d", "default", 61.69, 1.59, (1.14, 0.0016), (0.411, 0.001), (0.125, 0.359, 0.577))
_add("mobilenetv2_3d", "bottom", 64.03, 2.93, (1.24, 0.013), (0.428, 0.008), (0.104, 0.388, 0.624))
_add("mobilenetv3_3d", "top", 67.25, 0.99, (1.19, 0.001), (0.400, 0.001), (0.196, 0.415, 0.646))
_add("mobilenetv3_3d", "default", 62.44, 1.95, (1.065, 0.001), (0.381, 0.008), (0.181, 0.392, 0.619))
_add("mobilenetv3_3d", "bottom", 64.78, 3.29, (1.13, 0.241), (0.397, 0.002), (0.200, 0.472, 0.631))
_add("shufflenetv2_3d", "top", 68.84, 1.33, (1.31, 0.001), (0.447, 0.001), (0.151, 0.405, 0.535))
_add("shufflenetv2_3d", "default", 61.53, 1.59, (1.274, 0.001), (0.425, 0.008), (0.243, 0.454, 0.611))
_add("shufflenetv2_3d", "bottom", 56.37, 1.95, (1.270, 0.002), (0.417, 0.001), (0.122, 0.406, 0.582))
_add("dsts_3d", "top", 66.99, 1.68, (1.55, 0.001), (0.422, 0.001), (0.192, 0.483, 0.631))
_add("dsts_3d", "default", 61.22, 2.52, _NA, _NA, (0.151, 0.447, 0.617))
_add("dsts_3d", "bottom", 55.19, 2.88, (1.713, 0.002), (0.454, 0.001), (0.289, 0.572, 0.668))

#: The thesis' LiTS-test submissions (Table 4.8, L1208-1217), identified by their parameter counts
#: (2.88M, 4.64M, 1.26M in Tables 4.2/4.3) -> (Dice/case, global Dice) on the LiTS test server.
TABLE_4_8 = {("dsts_3d", "bottom"): (0.548, 0.768), ("mobilenetv2_2d", "top"): (0.536, 0.678),
             ("mobilenetv2_3d", "top"): (0.524, 0.746)}


def _label(network: str, variant: str) -> str:
    family, dims = network.rsplit("_", 1)
    mark = " (Table 4.8)" if (network, variant) in TABLE_4_8 else ""
    return f"{dims.upper()} {NETWORK_LABELS.get(family, family)} {variant}{mark}"


def _pair(mean, sd, fmt="{:.4f}") -> str:
    return format_number((mean, sd) if sd is not None and not math.isnan(sd) else mean, fmt)


def _rows(configs, rows_by_key, fill) -> list[list[str]]:
    out = []
    for network, variant in configs:
        row = rows_by_key.get((network, variant))
        thesis = THESIS.get((network, variant), {})
        cells = fill(row, thesis)
        cells[0] = "done" if row is not None else "pending"
        out.append([_label(network, variant)] + cells)
    return out


def sweep_report(rows: Sequence[Mapping[str, Any]], configs: Sequence[tuple[str, str]], *, title: str = "",
                 pending: Sequence[str] = ()) -> str:
    """The markdown of Tables 4.2-4.8 for the ``configs`` ``(network, variant)`` of a sweep.

    Args:
        rows: The finished rows (``model``, ``variant`` and the keys of the module docstring).
        configs: Every configuration of the sweep, in table order (unfinished ones print ``pending``).
        title: Heading above the tables.
        pending: Names of unfinished configurations (listed under the heading).
    """
    f = format_number
    by_key = {(r["model"], r["variant"]): r for r in rows}
    parts = [f"# {title}\n" if title else "",
             f"{len(rows)} of {len(configs)} configuration(s) finished" + (f"; pending: {', '.join(pending)}" if pending else "")
             + ". Thesis figures beside ours; `(Table 4.8)` marks the three models the thesis submitted to LiTS.\n"]

    def complexity(row, t):
        ours = ["", ""] if row is None else [f(row.get("macs_m"), "{:.2f}"), f(row.get("params_m"), "{:.3f}")]
        return ["", ours[0], f(t.get("macs_m"), "{:.2f}"), ours[1], f(t.get("params_m"), "{:.2f}")]

    def timing(row, t):
        tt, tp = t.get("train", _NA), t.get("predict", _NA)
        ours = ["", ""] if row is None else [_pair(row.get("train_s_per_slice"), row.get("train_s_per_slice_std")),
                                             _pair(row.get("predict_s_per_slice"), row.get("predict_s_per_slice_std"))]
        return ["", ours[0], _pair(*tt, fmt="{:.3f}"), ours[1], _pair(*tp, fmt="{:.3f}")]

    def sizes(row, t):
        th = t.get("sizes", (math.nan,) * 3)
        ours = [""] * 3 if row is None else [f(row.get(f"stage 2 tumour Dice {k}")) for k in ("small", "medium", "large")]
        return [""] + [f"{o} ({f(x)})" if row is not None else f"({f(x)})" for o, x in zip(ours, th)]

    def scores(row, t):
        keys = ("tumour Dice/case", "tumour global Dice", "tumour VOE", "tumour RVD", "tumour ASSD mm", "tumour MSSD mm")
        if row is None:
            return [""] * 13
        return ([""] + [f(row.get(f"stage 2 {k}")) for k in keys] + [f(row.get(k)) for k in keys[:2]]
                + [f(row.get("liver Dice/case")), f(row.get("swa stage 2 tumour Dice/case")),
                   f(row.get("epochs"), "{:.0f}"), f"{f(row.get('seconds'), '{:.0f}')} / {f(row.get('cpu_seconds'), '{:.0f}')}"])

    for rank, caption in ((2, "2D (2.5D, 9 slices -> 1)"), (3, "3D (8 slices -> 4)")):
        part = [c for c in configs if c[0].endswith(f"_{rank}d")]
        if not part:
            continue
        n = "4.2" if rank == 2 else "4.3"
        parts.append(markdown_table(("Model", "status", "MMACs", "thesis", "M params", "thesis"),
                                    _rows(part, by_key, complexity),
                                    f"Table {n}: {caption} complexity at the thesis' input size (ptflops-style MACs)"))
        n = "4.4" if rank == 2 else "4.5"
        parts.append(markdown_table(("Model", "status", "train t/b s/slice", "thesis", "predict t/(b z) s/slice", "thesis"),
                                    _rows(part, by_key, timing),
                                    f"Table {n}: {caption} seconds per output slice, mean ± sd over iterations "
                                    "(tumour stage; this machine, thesis: GTX 1080 Ti / i7-6700K)"))
        n = "4.6" if rank == 2 else "4.7"
        parts.append(markdown_table(("Model", "status", "Small (thesis)", "Medium (thesis)", "Large (thesis)"),
                                    _rows(part, by_key, sizes),
                                    f"Table {n}: {caption} tumour Dice by lesion size, stage 2 on the reference liver"))
    parts.append(markdown_table(
        ("Model", "status", "S2 Dice/case", "S2 global Dice", "S2 VOE", "S2 RVD", "S2 ASSD mm", "S2 MSSD mm",
         "cascade Dice/case", "cascade global Dice", "cascade liver Dice/case", "S2 Dice/case SWA", "epochs", "wall / CPU s"),
        _rows(list(configs), by_key, scores),
        "Table 4.8-style tumour scores: S2 = stage 2 alone on the reference liver (selected weights); cascade = "
        "stage 1 -> stage 2 (shared liver stage unless configured otherwise); SWA = the SWA candidate's stage 2; "
        "wall / CPU s: the row's seconds (the first row includes the shared liver stage)"))
    return "\n".join(p for p in parts if p)


def sweep_row(network: str, variant: str, summary: Mapping[str, Any], timing: Mapping[str, float],
              input_shape: Sequence[int], **extra: Any) -> dict[str, Any]:
    """One sweep row: the tumour network's complexity at ``input_shape`` (the thesis' 9 x 256 x 256 or
    8 x 256 x 256; :func:`tfmedseg.models.flops.model_complexity`), its Tables 4.4/4.5 timing from
    ``timing`` (the stage's :func:`~tfmedseg.training.stages.train_stage` timing with
    ``predict_batch_seconds_per_slice``) and the run's flat ``summary`` (:func:`tfmedseg.reports.lits.lits_report`)."""
    from tfmedseg.models.flops import model_complexity
    from tfmedseg.models.registry import build

    report = model_complexity(build(network, variant=variant, input_shape=tuple(input_shape)))
    return {"model": network, "variant": variant, "macs_m": report.macs / 1e6, "params_m": report.params / 1e6,
            "train_s_per_slice": timing.get("iteration_seconds_per_slice", math.nan),
            "train_s_per_slice_std": timing.get("iteration_seconds_per_slice_std", math.nan),
            "predict_s_per_slice": timing.get("predict_batch_seconds_per_slice", math.nan),
            "predict_s_per_slice_std": timing.get("predict_batch_seconds_per_slice_std", math.nan),
            "epochs": timing.get("epochs", math.nan), **dict(summary), **extra}
