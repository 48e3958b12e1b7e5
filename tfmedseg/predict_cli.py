"""The command line of :mod:`tfmedseg.predict` (``python -m tfmedseg.predict``, ``tfmedseg-predict``):
options, the one-line user errors and the final output (label volumes, what was written).

The work is :func:`tfmedseg.predict.predict_file`; this module only parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfmedseg.command import report_user_errors
from tfmedseg.logs import add_verbosity_options, configure_logging
from tfmedseg.predict import predict_file

__all__ = ["print_result", "main"]


def print_result(result: dict) -> None:
    """The command line's final output: voxels and millilitres of each label (lesions per view for a
    bone scan), and what was written (or that the output holds this job's result already)."""
    if result.get("up_to_date"):
        print(f"{result['output']} holds the result of this model, input and options already; nothing to do "
              "(pass --overwrite to write it again)")
        return
    for name, (voxels, ml) in result.get("volumes_ml", {}).items():
        print(f"  {name}: {voxels} voxels, {ml:.2f} ml")
    for view, v in result.get("instances", {}).get("views", {}).items():
        print(f"{view}: chest score {v['chest_score']:.2f}, {len(v['lesions'])} lesion(s)")
    written = result["written"]
    print(f"wrote {result['output']}" + (f" ({len(written)} files)" if len(written) > 1 else ""))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 user error, 130 stopped by Ctrl-C, 143 by SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="python -m tfmedseg.predict",
        description="Segment your own scan (a NIfTI file or a DICOM folder) with a trained tfmedseg model; with the "
                    "seed-001 whole-body SavedModel, a bone-scan NM DICOM file -> instances.json + overlay PNGs.",
        epilog="NIfTI input writes a uint8 label map; DICOM input writes <output>/overlay/ (RGB overlay series), "
               "<output>/label.nii.gz and, with highdicom installed, <output>/seg.dcm. See docs/predict.md.",
    )
    parser.add_argument("--model", type=Path, required=True, help="SavedModel version dir, run dir (model.keras) or .keras file")
    parser.add_argument("--input", type=Path, required=True, help="NIfTI file (.nii/.nii.gz) or a folder of DICOM files")
    parser.add_argument("--output", type=Path, required=True, help="NIfTI file for NIfTI input; folder (or .nii.gz) for DICOM input")
    parser.add_argument("--modality", default=None, help="NIfTI: modality of the scan (default CT); DICOM: only series of this Modality")
    parser.add_argument("--series-uid", default=None, help="DICOM: SeriesInstanceUID to segment when the folder holds several series")
    parser.add_argument("--series-number", type=int, default=None, help="DICOM: SeriesNumber of the overlay (default: source + 1000)")
    parser.add_argument("--opacity", type=float, default=0.3, help="DICOM: overlay colour opacity (default 0.3)")
    parser.add_argument("--window", type=float, nargs=2, metavar=("LEVEL", "WIDTH"), default=None,
                        help="DICOM: grey window of the overlay (default 40 400 for CT, percentiles otherwise)")
    parser.add_argument("--no-dicom-seg", action="store_true", help="DICOM: do not write seg.dcm even when highdicom is installed")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output written by tfmedseg (a label map of ours, or a folder with "
                             ".tfmedseg-output.json); foreign files and the input itself are never replaced")
    add_verbosity_options(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own one-line usage error
        return int(exc.code or 0)
    configure_logging(args)
    return report_user_errors(lambda: print_result(_naming_the_options(lambda: predict_file(
        args.model, args.input, args.output, modality=args.modality, series_uid=args.series_uid,
        series_number=args.series_number, opacity=args.opacity,
        window=tuple(args.window) if args.window else "auto", dicom_seg=not args.no_dicom_seg,
        overwrite=args.overwrite,
    ))))


def _naming_the_options(work):
    """``work()``; a folder of several DICOM series is refused naming this command's options (``--series-uid``),
    not the reader's keyword arguments (``series_uid=``)."""
    from tfmedseg.errors import InvalidInputError
    from tfmedseg.io.dicom import CHOOSE_SERIES

    try:
        return work()
    except InvalidInputError as exc:
        if CHOOSE_SERIES not in exc.reason:
            raise
        raise InvalidInputError(exc.reason.replace(CHOOSE_SERIES, "pass --series-uid (or --modality)"), path=exc.path) from exc
