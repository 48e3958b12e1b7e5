"""Evaluate one MAA SPECT/CT test patient: masks on the CT grid, DSC / IoU, TLR and SIRT doses.

Used by ``tfmedseg.experiments.maa_spect_liver``; every piece is a library function so other
drivers (a viewer, a batch planner) can call it.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tfmedseg.clinical.maa_report import patient_dosimetry
from tfmedseg.clinical.partial_volume import effective_sigma_mm
from tfmedseg.inference.maa import predict_stack, stack_to_volume
from tfmedseg.metrics.overlap import compute_dice, compute_iou
from tfmedseg.preprocessing.maa_inputs import MaaInputs
from tfmedseg.preprocessing.spect_ct import resample_spect_to_ct

__all__ = ["DosimetrySettings", "PatientResult", "evaluate_patient"]


@dataclasses.dataclass
class DosimetrySettings:
    """Clinical inputs: lung shunt (when the dataset gives none), target normal-liver dose, SPECT
    resolution for the partial-volume correction (None: uncorrected TLR), its measurement margin
    (tumour core / normal liver this far from the tumour, mm; 0: the whole masks) and the hot-spot
    threshold of the normal-liver measurement (multiple of its median counts; None: off)."""

    lung_shunt_fraction: float = 0.1
    target_normal_dose_gy: float = 40.0
    spect_fwhm_mm: float | None = 14.0
    gtm_margin_mm: float = 8.0
    normal_hot_factor: float | None = 1.5


@dataclasses.dataclass
class PatientResult:
    """One patient's outcome: table ``row``, clinical ``record``, CT-grid arrays for the report,
    ``seconds`` and ``images`` predicted per model (inference time per image)."""

    row: dict
    record: dict
    ct_hu: np.ndarray
    spect_on_ct: np.ndarray
    liver: np.ndarray
    tumour: np.ndarray
    seconds: dict
    images: dict


def _scores(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    return compute_dice(pred, ref), compute_iou(pred, ref)


def evaluate_patient(case, inputs: MaaInputs, models: dict, settings: DosimetrySettings, batch_size: int = 16) -> PatientResult:
    """Predict with the trained ``models`` (``"liver"``, ``"tumour"``, ``"combined"``; any subset)
    and measure everything on the CT grid.

    Args:
        case: The :class:`~tfmedseg.datasets.case.Case` (``images["ct"]``, ``images["spect"]``,
            ``label`` 0/1/2, ``meta`` with the phantom truth when present).
        inputs: Its :func:`~tfmedseg.preprocessing.maa_inputs.prepare_maa_inputs` output.
        models: Sigmoid Keras models by stage.
        settings: :class:`DosimetrySettings`.
        batch_size: Inference batch.

    Returns:
        :class:`PatientResult`; ``row`` holds ``liver_dsc/iou`` (liver model), ``tumour_dsc/iou``
        (tumour model), ``combined_liver_dsc/iou``, ``combined_tumour_dsc/iou``, TLR predicted,
        reference and true.
    """
    ct = case.images["ct"]
    depth = ct.shape[0]
    label = np.asarray(case.label.array)
    ref_liver, ref_tumour = label > 0, label == 2
    row: dict = {"patient": case.case_id, "abnormal_histogram": inputs.abnormal}
    seconds, images = {}, {}
    liver = tumour = None
    runs = {"liver": (inputs.ct, np.arange(depth)), "tumour": (inputs.display, inputs.display_slices),
            "combined": (inputs.fused, inputs.fused_slices)}
    for stage, model in models.items():
        x, slices = runs[stage]
        if stage == "liver" and x.shape[-1] != model.input_shape[-1]:
            x = np.repeat(x, model.input_shape[-1], axis=-1)
        start = time.perf_counter()
        masks = stack_to_volume(inputs.crop, predict_stack(model, x, batch_size), slices, depth)
        seconds[stage], images[stage] = time.perf_counter() - start, len(x)
        if stage == "liver":
            liver = masks[..., 0]
            row["liver_dsc"], row["liver_iou"] = _scores(liver, ref_liver)
        elif stage == "tumour":
            tumour = masks[..., 0]
            row["tumour_dsc"], row["tumour_iou"] = _scores(tumour, ref_tumour)
        else:
            row["combined_liver_dsc"], row["combined_liver_iou"] = _scores(masks[..., 0] | masks[..., 1], ref_liver)
            row["combined_tumour_dsc"], row["combined_tumour_iou"] = _scores(masks[..., 1], ref_tumour)
            if liver is None:
                liver = masks[..., 0] | masks[..., 1]
            if tumour is None:
                tumour = masks[..., 1]
    liver = ref_liver if liver is None else liver
    tumour = ref_tumour if tumour is None else tumour & (liver | tumour)
    spect = resample_spect_to_ct(case.images["spect"], ct).array  # original counts, never display pixels
    lsf = float(case.meta.get("lung_shunt_fraction", settings.lung_shunt_fraction))
    sigma = effective_sigma_mm(settings.spect_fwhm_mm, case.images["spect"].spacing) if settings.spect_fwhm_mm else None
    body = ct.array > -500.0
    kwargs = {"lung_shunt": lsf, "target_normal_dose_gy": settings.target_normal_dose_gy, "body": body, "sigma_mm": sigma,
              "margin_mm": settings.gtm_margin_mm, "hot_factor": settings.normal_hot_factor}
    record = patient_dosimetry(spect, liver, tumour, ct.spacing, **kwargs)
    reference = patient_dosimetry(spect, ref_liver, ref_tumour, ct.spacing, **kwargs)
    record["tlr_reference"] = reference["tlr"]
    row["tlr_pred"], row["tlr_ref"] = record["tlr"], reference["tlr"]
    if "tumour_to_liver_ratio" in case.meta:
        truth = float(case.meta["tumour_to_liver_ratio"])
        record["tlr_truth"] = row["tlr_true"] = truth
        row["tlr_error"] = None if record["tlr"] is None else abs(record["tlr"] / truth - 1.0)
    for key, name in (("liver_dsc", "dice_liver"), ("tumour_dsc", "dice_tumour")):
        if key in row:
            record[name] = row[key]
    return PatientResult(row, record, ct.array, spect, liver, tumour, seconds, images)
