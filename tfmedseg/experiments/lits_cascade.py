"""Evaluating a trained LiTS liver -> tumour cascade (seed 002), case by case, for the stage runner.

Two evaluations, as the thesis distinguishes them (Sec. 4.1.1, L1012: its local experiments
evaluated stage 2 alone, the LiTS server the whole cascade):

* :func:`cascade_evaluator` -- the **cascade**: stage 1 predicts the liver, stage 2 the tumour on the
  CT combined with that prediction (:func:`tfmedseg.inference.cascade.predict_cascade`); liver and
  tumour scores, lesion detection, the LiTS-submission NIfTI (labels 0/1/2, source header).
* :func:`stage_evaluator` -- **one stage alone** on the reference: the liver stage's largest
  component against the reference liver, or the tumour stage on the CT combined with the
  *reference* liver (``reference_liver``) against the reference tumour (stage-2 evaluation).

Each returns ``case -> CaseOutcome`` for :func:`tfmedseg.experiments.runner.evaluate_cases`; every
row carries ``evaluation`` (``cascade``, ``stage 2 (reference liver)``, ``liver stage``) and
``model``. :func:`serving_spec` is a stage's input contract (geometry, in-plane size, HU window).
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import numpy as np

from tfmedseg.experiments.runner import CaseOutcome

__all__ = ["CASCADE", "STAGE2", "LIVER_STAGE", "serving_spec", "foreground_dice", "batch_predictor", "cascade_evaluator", "stage_evaluator",
           "evaluate_stages_alone", "prediction_timing", "split_cases", "case_arrays", "export_cascade"]

#: ``evaluation`` labels of the report rows.
CASCADE = "cascade"
STAGE2 = "stage 2 (reference liver)"
LIVER_STAGE = "liver stage"


def serving_spec(geometry, inplane_size: int, hu_window, labels: tuple[str, ...], batch_size: int = 8):
    """The :class:`~tfmedseg.inference.spec.ServingSpec` of one stage: its slice geometry, in-plane
    size and HU window mapped to [0, 1]."""
    from tfmedseg.inference.spec import IntensitySpec, ServingSpec

    return ServingSpec(input_size=(inplane_size, inplane_size), labels=labels, batch_size=batch_size,
                       intensity=IntensitySpec("clip_scale", *hu_window, 0.0, 1.0), **geometry.serving_fields())


def foreground_dice() -> list:
    """Per-epoch training and validation Dice of a stage's foreground (TensorBoard, history.csv)."""
    from tfmedseg.metrics.keras_metrics import DiceMetric

    return [DiceMetric(class_id=1, name="dice")]


_PREDICTORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def batch_predictor(net):
    """``x -> probabilities`` of ``net`` in inference mode, traced once per input shape; one per
    network (the cascade, the stage-alone evaluations and the timing share its trace; candidate
    weights swapped into ``net`` are seen, the variables are the same)."""
    import tensorflow as tf

    fn = _PREDICTORS.get(net)
    if fn is None:
        fn = _PREDICTORS[net] = tf.function(lambda x: net(x, training=False), reduce_retracing=True)
    return fn


def cascade_evaluator(liver_net, tumour_net, specs, cascade, hu_window, model_name: str, output_dir=None):
    """``case -> CaseOutcome`` of the whole cascade.

    Args:
        liver_net / tumour_net: The two stages' networks.
        specs: ``(liver_spec, tumour_spec)`` (:func:`serving_spec`).
        cascade: :class:`~tfmedseg.inference.spec.CascadeConfig`.
        hu_window: HU clamp mapped to [0, 1].
        model_name: The rows' ``model``.
        output_dir: When given, ``<output_dir>/submission/test-segmentation-<index>.nii`` is written.
    """
    from tfmedseg.inference.cascade import CascadeStage, predict_cascade
    from tfmedseg.io.nifti import write_nifti
    from tfmedseg.metrics.lesions import lesion_detection_counts
    from tfmedseg.reports import OverlayItem, evaluate_segmentation_case

    liver = CascadeStage(batch_predictor(liver_net), specs[0])
    tumour = CascadeStage(batch_predictor(tumour_net), specs[1])

    def evaluate_one(case) -> CaseOutcome:
        ct = case.images["ct"]
        start = time.perf_counter()
        result = predict_cascade(ct.array, liver, tumour, cascade, hu_window=hu_window)
        seconds = time.perf_counter() - start
        if output_dir is not None:
            index = case.meta.get("index", case.case_id)
            write_nifti(result.labels, Path(output_dir) / "submission" / f"test-segmentation-{index}.nii",
                        reference=ct, dtype=np.uint8)
        reference = case.label.array
        row = {"model": model_name, "evaluation": CASCADE, "case": case.case_id,
               **evaluate_segmentation_case(result.labels, reference, spacing=ct.spacing),
               **lesion_detection_counts(result.labels == 2, reference == 2)}
        overlay = OverlayItem(case.case_id, ct.array, result.labels >= 1, result.labels == 2)
        return CaseOutcome(row, overlay, seconds, ct.array.shape[0])

    return evaluate_one


def stage_evaluator(stage: str, net, spec, cascade, hu_window, model_name: str):
    """``case -> CaseOutcome`` of one stage alone on the reference.

    Args:
        stage: ``"liver"`` (largest component of the thresholded liver probability vs the reference
            liver) or ``"tumour"`` (stage 2 on the CT combined with the reference liver, thresholds
            and component filtering of ``cascade``, vs the reference tumour).
        net / spec: The stage's network and serving spec.
        cascade / hu_window / model_name: As :func:`cascade_evaluator`.
    """
    from tfmedseg.inference.cascade import CascadeStage, predict_cascade, predict_stage
    from tfmedseg.inference.postprocess import largest_connected_component
    from tfmedseg.metrics.lesions import lesion_detection_counts
    from tfmedseg.preprocessing.intensity import hu_to_unit
    from tfmedseg.reports import evaluate_segmentation_case

    if stage not in ("liver", "tumour"):
        raise ValueError(f"stage must be 'liver' or 'tumour', got {stage!r}")
    predictor = CascadeStage(batch_predictor(net), spec)

    def evaluate_one(case) -> CaseOutcome:
        ct, reference = case.images["ct"], case.label.array
        start = time.perf_counter()
        if stage == "liver":
            probability = predict_stage(predictor, hu_to_unit(np.asarray(ct.array, np.float32), *hu_window))
            labels = largest_connected_component(probability > cascade.liver_threshold, connectivity=3).astype(np.uint8)
            classes, sizes, evaluation = {"liver": (1, 2)}, None, LIVER_STAGE
        else:
            labels = predict_cascade(ct.array, None, predictor, cascade, hu_window=hu_window,
                                     reference_liver=reference >= 1).labels
            classes, sizes, evaluation = {"tumour": (2,)}, "tumour", STAGE2
        seconds = time.perf_counter() - start
        row = {"model": model_name, "evaluation": evaluation, "case": case.case_id,
               **evaluate_segmentation_case(labels, reference, spacing=ct.spacing, classes=classes, lesion_sizes=sizes)}
        if stage == "tumour":
            row.update(lesion_detection_counts(labels == 2, reference == 2))
        return CaseOutcome(row, None, seconds, ct.array.shape[0])

    return evaluate_one


def evaluate_stages_alone(results, specs, cases, cascade, hu_window, names) -> list[dict]:
    """Per-case rows of each stage alone with its candidate weights.

    The tumour stage is evaluated on the reference liver (stage 2) with its selected weights and,
    when it has one, its SWA candidate; the liver stage alone only when it has an SWA candidate
    (selected and SWA; the cascade already evaluates its selected weights). Each row's ``model``
    is ``"<names[stage]> (<weights>)"``. The selected weights are back in place afterwards.

    Args:
        results: ``{"liver": StageResult, "tumour": StageResult}``
            (:class:`~tfmedseg.training.stages.StageResult`).
        specs / names: Per stage serving spec and display name.
        cases: The validation cases.
        cascade / hu_window: As :func:`cascade_evaluator`.
    """
    from tfmedseg.experiments.runner import evaluate_cases
    from tfmedseg.training.stages import candidate_weights

    rows = []
    for stage in ("tumour", "liver"):
        result = results[stage]
        candidates = [c for c in ("swa",) if c in result.candidates and c != result.selected]
        if stage == "liver" and not candidates:
            continue
        for weights in [result.selected, *candidates]:
            with candidate_weights(result, weights):
                evaluate_one = stage_evaluator(stage, result.model, specs[stage], cascade, hu_window, f"{names[stage]} ({weights})")
                rows += evaluate_cases(cases, evaluate_one, what=f"{stage}-stage case").rows
    return rows


def prediction_timing(net, spec, geometry, cases, *, batches: int = 8, seed: int = 0) -> dict[str, float]:
    """Seconds per output slice of ``net`` per prediction batch, ``t / (b z)`` (Tables 4.4/4.5):
    ``batches`` batches of ``spec.batch_size`` samples of ``geometry`` from ``cases``
    (:class:`~tfmedseg.data.source.CaseArrays`), the first not timed.

    Returns:
        ``predict_batch_seconds_per_slice``, ``..._std`` and ``predict_batches_timed``.
    """
    from tfmedseg.training.iteration_timer import time_batches

    data = geometry.dataset(cases, spec.batch_size, seed=seed, epochs=None).take(batches)
    stats = time_batches(batch_predictor(net), data).per_unit(spec.batch_size * geometry.output_slices)
    return {"predict_batch_seconds_per_slice": stats["mean"], "predict_batch_seconds_per_slice_std": stats["std"],
            "predict_batches_timed": stats["count"]}


def split_cases(cases: list, validation_ids, fraction: float, seed: int) -> tuple[list, list]:
    """``(train, validation)``: the cases of LiTS indices ``validation_ids`` (seed 002 Table A.2) when
    all are present, else a seeded ``fraction`` (:func:`tfmedseg.experiments.runner.seeded_split`)."""
    from tfmedseg.experiments.runner import seeded_split

    index = {c.meta.get("index"): c for c in cases}
    if all(i in index for i in validation_ids):
        val = [index[i] for i in validation_ids]
        ids = {c.case_id for c in val}
        return [c for c in cases if c.case_id not in ids], val
    return seeded_split(cases, fraction, seed, keep_one=False)


def case_arrays(case, config):
    """``(arrays, spacing, meta)`` of one case for the cache
    (:func:`tfmedseg.preprocessing.cascade.cascade_training_arrays` with ``config.hu_window``,
    ``inplane_size``, ``cascade.combination``, ``tumour_slice_margin``)."""
    from tfmedseg.preprocessing.cascade import cascade_training_arrays

    ct = case.images["ct"]
    arrays, (lo, hi) = cascade_training_arrays(
        ct.array, case.label.array, hu_window=config.hu_window, inplane_size=config.inplane_size,
        combination=config.cascade.combination, slice_margin=config.tumour_slice_margin)
    return arrays, ct.spacing, {"liver_slices": [lo, hi]}


def export_cascade(config, out, nets, specs, summary, samples, seed: int):
    """The run-dir export bundles ``<out>/liver_model`` and ``<out>/tumour_model`` (representative
    samples from ``samples[stage]``, :class:`~tfmedseg.data.source.CaseArrays`) and the cascade
    SavedModel as the next version of ``<config.export_dir>/<config.export_name>`` unless these
    weights are exported already. Returns the new version directory or None."""
    import math

    from tfmedseg.config import config_hash
    from tfmedseg.experiments.runner import export_once, export_stage
    from tfmedseg.export.savedmodel import export_cascade_savedmodel

    info = {"seed": "002", "experiment": "liver_ct_2d3d", "config_hash": config_hash(config),
            "metrics": {k: v for k, v in summary.items() if isinstance(v, float) and not math.isnan(v)}}
    for name, stage in (("liver", config.liver), ("tumour", config.tumour)):
        data = stage.geometry.dataset(samples[name], 1, seed=seed, epochs=1, foreground_fraction=stage.foreground_fraction)
        export_stage(nets[name], Path(out) / f"{name}_model", specs[name],
                     {**info, "stage": name, "model": stage.model, "variant": stage.variant}, data)
    return export_once(config.export_dir, config.export_name, [nets["liver"], nets["tumour"]], lambda p: export_cascade_savedmodel(
        nets["liver"], nets["tumour"], p, liver_spec=specs["liver"], tumour_spec=specs["tumour"], cascade=config.cascade,
        model_name=config.export_name, metadata=info))
