"""``python -m tfmedseg.export``: SavedModel (TF Serving layout) and TFLite export of a trained model.

Example:
    python -m tfmedseg.export --model runs/liver_ct_2d3d/liver_model --format all --output saved_models/liver/1

``python -m tfmedseg.experiments.liver_ct_2d3d`` exports the whole cascade to ``saved_models/liver_ct_2d3d/<v>``
itself; this command exports one stage (a run directory with ``model.keras``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import tfmedseg  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow loads)
from tfmedseg.command import report_user_errors
from tfmedseg.errors import ExportError, TfMedSegError
from tfmedseg.export.versions import savedmodel_versions, unservable_newest_version, version_dirs
from tfmedseg.io._atomic import atomic_dir, atomic_file
from tfmedseg.logs import add_verbosity_options, configure_logging
from tfmedseg.progress import progress

FORMATS = ("savedmodel", "tflite", "all")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from tfmedseg.metrics.overlap import compute_dice

    return float(compute_dice(a, b))


def _labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    return probs[..., 0] > threshold if probs.shape[-1] == 1 else np.argmax(probs, axis=-1)


def export_tflite(bundle: Any, output: Path) -> dict[str, Any]:
    """Write ``model_<quantization>.tflite`` files and return a per-variant accuracy report.

    All variants are converted and checked (:func:`convert_tflite_variants`) before the first file
    is written, so a conversion that fails writes nothing.
    """
    variants = convert_tflite_variants(bundle)
    return write_tflite_variants(variants, output)


def convert_tflite_variants(bundle: Any) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Convert ``bundle.model`` to every TFLite variant in memory and measure each against Keras.

    The report gives, per variant, the maximum absolute probability difference to Keras and the Dice
    between the Keras and TFLite foreground masks (all non-background labels) on the representative
    inputs; when the run saved their reference labels, also each runtime's Dice against them and the
    drop of the TFLite Dice from the Keras Dice.

    Returns:
        ``{quantization: (flatbuffer bytes, report entry)}``.
    """
    import keras

    from tfmedseg.export.tflite import QUANTIZATIONS, TFLiteRunner, convert_to_tflite

    model = bundle.model
    samples = bundle.representative
    input_shape = tuple(model.inputs[0].shape[1:])
    if samples is None:
        if any(d is None for d in input_shape):
            raise TfMedSegError("the model input has free dimensions and the run has no representative.npz to fix them", path="--model")
        samples = np.random.default_rng(0).random((4, *input_shape), dtype=np.float32)
    samples = np.asarray(samples, np.float32)
    if any(d is None for d in input_shape):
        inp = keras.Input(samples.shape[1:], name="image")
        model = keras.Model(inp, model(inp), name=model.name)
    reference = model.predict(samples, verbose=0)
    truth = None if bundle.representative_labels is None else np.asarray(bundle.representative_labels).reshape(reference.shape[:-1]) > 0
    ref_fg = _labels(reference, bundle.spec.threshold) > 0
    keras_vs_truth = None if truth is None else _dice(ref_fg, truth)
    variants: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for quantization in progress(QUANTIZATIONS, desc="TFLite conversion and checks", unit="variant"):
        data = (lambda: (s[None] for s in samples)) if quantization == "int8" else None
        flatbuffer = convert_to_tflite(model, quantization, data)
        predicted = TFLiteRunner(flatbuffer)(samples)
        lite_fg = _labels(predicted, bundle.spec.threshold) > 0
        entry = {
            "file": f"model_{quantization}.tflite",
            "bytes": len(flatbuffer),
            "max_abs_diff": float(np.abs(predicted - reference).max()),
            "dice_vs_keras": _dice(ref_fg, lite_fg),
        }
        line = (f"  tflite {quantization}: {len(flatbuffer) / 1e6:.2f} MB, max |diff| {entry['max_abs_diff']:.2e}, "
                f"Dice vs Keras {entry['dice_vs_keras']:.4f}")
        if truth is not None:
            entry["dice_vs_truth"] = _dice(lite_fg, truth)
            entry["keras_dice_vs_truth"] = keras_vs_truth
            entry["dice_drop_vs_keras"] = keras_vs_truth - entry["dice_vs_truth"]
            line += f", Dice vs truth {entry['dice_vs_truth']:.4f} (Keras {keras_vs_truth:.4f})"
        variants[quantization] = (flatbuffer, entry)
        print(line)
    return variants


def write_tflite_variants(variants: dict[str, tuple[bytes, dict[str, Any]]], output: Path) -> dict[str, Any]:
    """Write the converted variants into ``output`` (each file staged and renamed); return the report."""
    report = {}
    for quantization, (flatbuffer, entry) in variants.items():
        with atomic_file(output / entry["file"], ".tflite") as tmp:
            Path(tmp).write_bytes(flatbuffer)
        report[quantization] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfmedseg.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="run directory (model.keras + serving_spec.json) or a .keras file")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel")
    parser.add_argument("--output", type=Path, required=True, help="saved_models/<name>/<version>")
    parser.add_argument("--name", default=None, help="model name (default: the output's parent directory name)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing version directory written by tfmedseg (with --format tflite into a version "
                             "of the same export: its .tflite files), or export again what another version holds already")
    add_verbosity_options(parser)
    args = parser.parse_args(argv)
    configure_logging(args)
    return report_user_errors(lambda: _export_outside_the_model(args))


def _export_outside_the_model(args: argparse.Namespace) -> None:
    """:func:`export` after refusing an ``--output`` that is, contains or sits inside ``--model`` (the run
    directory or ``.keras`` file it reads): an export never writes into its input."""
    from tfmedseg.io._atomic import check_output_not_input

    check_output_not_input(args.output, [args.model])
    export(args)
    warn_unservable_newest_version(args.output)


def export(args: argparse.Namespace) -> None:
    """Run the export the parsed command line asks for.

    Nothing is left behind by a failing export: the version folder is staged beside ``--output``
    and renamed into place when everything is written (:func:`~tfmedseg.io._atomic.atomic_dir`).
    ``--format tflite`` into an existing version folder of the same export stages a copy of it, adds
    the TFLite files and the report, and replaces it at the end, so a failure leaves that folder
    exactly as it was; into a folder of another export it is refused (``--overwrite`` replaces that
    version). A failure also removes the parent folders the run created.

    Nothing is written when ``--output`` or, for a version ``<name>/<N>``, another version beside it
    holds this export already (same run directory contents, name, and the formats asked for): the
    command says where and returns; ``--overwrite`` exports it again.
    """
    from tfmedseg.export.run_dir import load_for_export

    name = args.name or args.output.parent.name
    provenance = export_provenance(args.model, name)
    formats = {"savedmodel", "tflite"} if args.format == "all" else {args.format}
    recorded = _recorded_export(args.output)
    if not args.overwrite:
        holder = args.output if _holds_export(recorded, provenance, formats) else _sibling_version_holding(
            args.output, provenance, formats)
        if holder is not None:
            again = "" if holder == args.output else f" as {args.output}"
            print(f"{holder} holds this export of {args.model} ({', '.join(sorted(formats))}) already; nothing to do "
                  f"(pass --overwrite to export it again{again})")
            return
    add_to = False
    if args.format == "tflite":
        add_to = _check_tflite_output(args.output, args.overwrite, recorded, provenance, args.model)
        _check_not_a_tflite_only_version(args.output, add_to and "savedmodel" in recorded["formats"], provenance)
    else:
        from tfmedseg.export.savedmodel import check_export_dir  # imports TensorFlow: not before the done-check above

        check_export_dir(args.output, args.overwrite, option="--overwrite")
    provenance = {**provenance, "formats": sorted(formats | (set(recorded["formats"]) if add_to else set()))}
    bundle = load_for_export(args.model)
    channels = bundle.model.inputs[0].shape[-1]
    if args.format in ("savedmodel", "all") and bundle.spec.mode in ("3d_patch", "3d_slab") and channels != 1:
        raise ExportError(f"the generic SavedModel's raw-scan signatures take one-channel volumes, this {bundle.spec.mode} "
                          f"model has {channels} input channels (e.g. seed-004 PET/CT: its experiment exports "
                          "saved_models/hecktor_petct/<v> with segment_petct); use --format tflite", path=args.model)
    print(f"exporting {args.model} as {name!r} to {args.output}")
    _export(args, bundle, name, provenance, add_to)


def export_provenance(model: Path, name: str) -> dict[str, Any]:
    """What makes an export (without its formats): the run directory or ``.keras`` file
    (:func:`~tfmedseg.io.provenance.model_fingerprint`) and the model name; recorded in the version
    folder's marker with the formats written, so that the same command again is told from another job."""
    from tfmedseg.io.provenance import model_fingerprint

    return {"command": "export", "model": model_fingerprint(model), "name": name}


def _recorded_export(output: Path) -> dict[str, Any] | None:
    """The export provenance recorded in ``output``'s marker (None: absent, foreign, or recorded nothing)."""
    from tfmedseg.io._atomic import read_marker

    if output.is_symlink() or not output.is_dir():
        return None
    recorded = (read_marker(output) or {}).get("provenance")
    if not isinstance(recorded, dict) or recorded.get("command") != "export" or not isinstance(recorded.get("formats"), list):
        return None
    return recorded


def _same_export(recorded: dict[str, Any], provenance: dict[str, Any]) -> bool:
    return all(recorded.get(key) == value for key, value in provenance.items())


def _holds_export(recorded: dict[str, Any] | None, provenance: dict[str, Any], formats: set[str]) -> bool:
    """True when a version's recorded export is this ``provenance`` with every one of ``formats``."""
    return recorded is not None and _same_export(recorded, provenance) and formats <= set(recorded["formats"])


def _sibling_version_holding(output: Path, provenance: dict[str, Any], formats: set[str]) -> Path | None:
    """The highest other version beside the version folder ``output`` (``<name>/<N>``) that holds
    this export with ``formats``: TF Serving would serve the same model twice under two versions."""
    if not output.name.isdigit():
        return None
    for version in version_dirs(output.parent):
        if version.name != output.name and _holds_export(_recorded_export(version), provenance, formats):
            return version
    return None


def _export(args: argparse.Namespace, bundle: Any, name: str, provenance: dict[str, Any], add_to: bool = False) -> None:
    from tfmedseg.export.savedmodel import export_errors, save_into, segmentation_export

    variants = convert_tflite_variants(bundle) if args.format in ("tflite", "all") else None
    savedmodel = args.format in ("savedmodel", "all")
    served = segmentation_export(bundle.model, bundle.spec, name, bundle.info) if savedmodel else None
    with atomic_dir(args.output, args.overwrite, kind="savedmodel", update=add_to, provenance=provenance,
                    option="--overwrite") as staging:
        if served is not None:
            with export_errors(args.output, name):
                save_into(*served[:2], staging, served[2])
            print("  SavedModel with signatures serving_default, predict_bytes, segment, segment_bytes")
        if variants is not None:
            report = write_tflite_variants(variants, staging)
            meta_path = staging / "metadata.json"
            try:
                meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"model_name": name, **bundle.info}
            except ValueError as exc:
                raise ExportError(f"not valid JSON ({exc})", path=args.output / "metadata.json") from exc
            meta["tflite"] = report
            with atomic_file(meta_path, ".json") as tmp:
                Path(tmp).write_text(json.dumps(meta, indent=2, default=str))


def _check_not_a_tflite_only_version(output: Path, keeps_savedmodel: bool, provenance: dict[str, Any]) -> None:
    """Refuse to leave a version folder with TFLite files only in a TF Serving model base path.

    TF Serving's file-system source takes every numeric child of a model's base path as a version (it
    does not look inside) and, with the default ``latest`` policy, loads the highest one; a folder
    without ``saved_model.pb`` fails to load ("Specified file path does not appear to contain a
    SavedModel bundle"): a fresh server does not serve the model, a running one logs the failure. So
    ``--format tflite`` may not write (or, with ``--overwrite``, leave) a numeric ``<name>/<N>`` without a
    SavedModel while ``<name>`` holds SavedModel versions. A base path of TFLite-only versions (not
    served) is fine.

    Raises:
        ExportError: One line naming ``output``, the SavedModel versions beside it and the three ways out:
            the SavedModel version of this export (``provenance``) as ``--output``, ``--format all``, or a
            model folder of its own (``<name>_tflite/<N>``).
    """
    if keeps_savedmodel or not output.name.isdigit():
        return
    served = savedmodel_versions(output.parent)  # highest first
    if not served:
        return
    own = next((p for p in served if p != output and _holds_export(_recorded_export(p), provenance, {"savedmodel"})), None)
    what = ("would replace its SavedModel with TFLite files only" if output in served else
            f"would hold TFLite files only beside SavedModel versions ({', '.join(p.name for p in reversed(served))})")
    first = f"--output {own}" if own is not None else "this export's SavedModel version as --output"
    raise ExportError(f"{what}; TF Serving fails on such a version. Use {first}, --format all, or "
                      f"--output {_tflite_model_folder(output.parent) / output.name}", path=output)


def _tflite_model_folder(model_root: Path) -> Path:
    """``<name>_tflite`` beside the model folder ``<name>``: where TFLite-only versions stay out of TF Serving's way."""
    return model_root.with_name(model_root.name + "_tflite")


def warn_unservable_newest_version(output: Path) -> None:
    """Say so (one line on stderr) when the newest numeric folder beside the version folder ``output``
    has no ``saved_model.pb`` while SavedModel versions sit beside it.

    Such a folder (TFLite files only, e.g. written by a tfmedseg older than the refusal in
    :func:`_check_not_a_tflite_only_version`) is the version TF Serving's default ``latest`` policy loads,
    and it fails to load: the model is not served. Nothing is moved (not ours to move); the line names the
    folder and the way out.
    """
    if not output.name.isdigit():
        return
    folder = unservable_newest_version(output.parent)
    if folder is not None:
        print(f"warning: {folder}: newest version of {output.parent} but no saved_model.pb (TFLite files only?): TF "
              f"Serving loads it and fails; move it out, e.g. to "
              f"{_tflite_model_folder(output.parent) / folder.name}", file=sys.stderr)


def _check_tflite_output(output: Path, overwrite: bool, recorded: dict[str, Any] | None, provenance: dict[str, Any],
                         model: Path) -> bool:
    """May ``--format tflite`` write into ``output``? True: add the TFLite files to the version
    folder holding this very export (``recorded``); False: write a new folder (absent or empty, or
    ``overwrite`` replacing a version of ours).

    Raises:
        ExportError: ``output`` is a file; a folder of foreign files; TFLite files there already
            without ``overwrite``; without ``overwrite``, a folder of another export, of another
            output of ours, or one that records no export (its model is unknown): TFLite files of
            ``model`` there would mix two models in one version.
    """
    from tfmedseg.export.savedmodel import check_export_dir
    from tfmedseg.io._atomic import has_marker, read_marker

    if output.exists() and not output.is_dir():
        raise ExportError("output exists and is not a directory", path=output)
    if not output.is_dir() or not any(output.iterdir()):
        return False
    if not has_marker(output) and not (output / "metadata.json").is_file():
        raise ExportError("folder holds files tfmedseg did not write; choose another --output", path=output)
    if recorded is not None and _same_export(recorded, provenance):
        existing = sorted(p.name for p in output.glob("model_*.tflite"))
        if existing and not overwrite:
            raise ExportError(f"holds TFLite files already ({', '.join(existing)}); pass --overwrite to replace them", path=output)
        return True
    if not overwrite:
        kind, would = (read_marker(output) or {}).get("kind", "savedmodel"), "would"
        if recorded is not None:
            holds = f"the export of another model ({recorded['model']['path']} as {recorded.get('name')!r})"
        elif kind != "savedmodel":
            holds = f"a {kind!r} output of tfmedseg, not an export"
        else:
            holds, would = "an export that records no model (an experiment's, or an older tfmedseg's)", "could"
        raise ExportError(f"holds {holds}; adding the TFLite files of {model} {would} mix two models in one version: choose "
                          "another --output, or pass --overwrite to replace that version", path=output)
    check_export_dir(output, True, versioned=False, option="--overwrite")  # ours (marker or legacy metadata)
    return False


if __name__ == "__main__":
    sys.exit(main())
