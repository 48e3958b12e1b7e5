"""Bad configs and command lines (experiment, predict, export), called in-process: exit 2, one line."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tfmedseg.errors import ConfigError
from tfmedseg.experiments import liver_ct_2d3d

# Each bad value must fail before any phantom is generated or network built.
BAD_SETS = {
    "inplane_size=100000": "inplane_size",
    "inplane_size=64.5": "inplane_size",
    "inplane_size=null": "inplane_size",
    "inplane_size=abc": "inplane_size",
    "inplane_size=0": "inplane_size",
    "max_cases=-1": "max_cases",
    "tumour_slice_margin=-3": "tumour_slice_margin",
    "validation_fraction=2": "validation_fraction",
    "cascade.liver_threshold=nan": "liver_threshold",
    "liver.batch_size=0": "batch_size",
    "tumour.steps_per_epoch=-5": "steps_per_epoch",
    "liver.foreground_fraction=1.5": "foreground_fraction",
    "no_such_key=1": "no_such_key",
    "liver.train=5": "liver.train",
    "hu_window=[1, 2": "hu_window",
    "=5": "=5",
    "cascade.combination=sum": "combination",
}


@pytest.mark.parametrize("override", sorted(BAD_SETS))
def test_bad_set_values(tmp_path, probe, override):
    argv = ["--set", override, "--output-dir", tmp_path / "run", "--cache-dir", tmp_path / "cache"]
    probe.exit2(liver_ct_2d3d.main, argv, BAD_SETS[override], watch=tmp_path)


CONFIG_FILES = {
    "binary": (b"\x00\x01\x02\xff\xfe" * 50, "binary"),
    "latin1": ("inplane_size: 64 # caf\xe9\n".encode("latin-1"), "UTF-8"),
    "alias_bomb": (b"l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + b"".join(  # ~600 bytes -> 9**9 nodes
        f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]\n".encode() for k in range(1, 9)), "aliases"),
    "recursive_alias": (b"a: &a [1, *a]\n", "recursive"),
    "duplicate_keys": (b"inplane_size: 64\ninplane_size: 128\n", "duplicate key"),
    "top_level_list": (b"- 1\n- 2\n", "mapping"),
    "not_yaml": (b"inplane_size: [64\n", "not valid YAML"),
    "unknown_key": (b"inplane_sise: 64\n", "inplane_sise"),
    "wrong_type": (b"liver:\n  batch_size: eight\n", "liver.batch_size"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_bad_config_files(tmp_path, probe, case):
    data, match = CONFIG_FILES[case]
    config = tmp_path / f"{case}.yaml"
    config.write_bytes(data)
    argv = ["--config", config, "--output-dir", tmp_path / "run", "--cache-dir", tmp_path / "cache"]
    probe.exit2(liver_ct_2d3d.main, argv, (config.name, match), watch=tmp_path, match=match)


def test_huge_config_file_is_refused_without_parsing(tmp_path, probe):
    config = tmp_path / "huge.yaml"
    with open(config, "wb") as f:
        f.truncate(50 << 20)
    probe.exit2(liver_ct_2d3d.main, ["--config", config, "--output-dir", tmp_path / "run"], config.name, watch=tmp_path)


def test_bad_shared_options(tmp_path, probe):
    afile = tmp_path / "afile"
    afile.write_text("x")
    common = ["--cache-dir", tmp_path / "cache"]
    probe.exit2(liver_ct_2d3d.main, ["--output-dir", afile, *common], "--output-dir", watch=tmp_path)
    probe.exit2(liver_ct_2d3d.main, ["--output-dir", tmp_path / "run", "--cache-dir", afile], "--cache-dir", watch=tmp_path)
    probe.exit2(liver_ct_2d3d.main, ["--output-dir", afile / "sub", *common], "--output-dir", watch=tmp_path)
    probe.exit2(liver_ct_2d3d.main, ["--seed", "-1", "--output-dir", tmp_path / "run", *common], "--seed", watch=tmp_path)
    probe.exit2(liver_ct_2d3d.main, ["--phantom-cases", "0", "--output-dir", tmp_path / "run", *common], "--phantom-cases",
                watch=tmp_path)
    probe.exit2(liver_ct_2d3d.main, ["--data-dir", tmp_path / "missing", "--output-dir", tmp_path / "run"], "missing")
    probe.exit2(liver_ct_2d3d.main, ["--config", tmp_path / "nope.yaml", "--output-dir", tmp_path / "run"], "nope.yaml",
                watch=tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    probe.exit2(liver_ct_2d3d.main, ["--data-dir", data, "--output-dir", data / "run"], "--output-dir", watch=tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_dir(tmp_path, probe):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    probe.exit2(liver_ct_2d3d.main, ["--output-dir", locked / "run", "--cache-dir", tmp_path / "cache"], "--output-dir")


def test_config_errors_name_the_key_in_library_calls(probe):
    from tfmedseg.config import apply_overrides

    cfg = liver_ct_2d3d.LiverCT2D3DConfig()
    probe.error(lambda: apply_overrides(cfg, ["inplane_size=1e9"]), "inplane_size", kind=ConfigError)
    probe.error(lambda: apply_overrides(cfg, ["liver.train.epochs=2.5"]), "liver.train.epochs", kind=ConfigError)


# ----------------------------------------------------------------------------- predict / export command lines
@pytest.fixture(scope="module")
def model_and_scan(tmp_path_factory):
    import keras
    import nibabel as nib

    from tfmedseg.export.run_dir import save_for_export
    from tfmedseg.export.spec import ServingSpec

    root = tmp_path_factory.mktemp("predict")
    inp = keras.Input((None, None, 1), name="image")
    run = save_for_export(keras.Model(inp, keras.layers.Conv2D(2, 1, activation="softmax")(inp)), root / "run",
                          ServingSpec(mode="2d", context_slices=1, labels=("background", "liver")))
    scan = root / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), np.eye(4)), str(scan))
    return run, scan


def test_bad_predict_command_lines(tmp_path, probe, model_and_scan):
    from tfmedseg.predict import main

    run, scan = model_and_scan
    out = tmp_path / "labels.nii.gz"
    probe.exit2(main, ["--model", tmp_path / "nomodel", "--input", scan, "--output", out], "nomodel", watch=tmp_path)
    probe.exit2(main, ["--model", run, "--input", tmp_path / "none.nii.gz", "--output", out], "none.nii.gz", watch=tmp_path)
    probe.exit2(main, ["--model", run, "--input", scan, "--output", scan, "--overwrite"], "scan.nii.gz")
    probe.exit2(main, ["--model", run, "--input", scan, "--output", out, "--opacity", "2"], "--opacity", watch=tmp_path)
    (tmp_path / "empty_model").mkdir()
    probe.exit2(main, ["--model", tmp_path / "empty_model", "--input", scan, "--output", out], "empty_model", watch=tmp_path)
    dicom_in = tmp_path / "dicom"
    dicom_in.mkdir()
    probe.exit2(main, ["--model", run, "--input", dicom_in, "--output", tmp_path / "o", "--series-number", str(2**31)],
                "--series-number", watch=tmp_path)


def test_tflite_export_into_an_existing_version_needs_overwrite(tmp_path, probe, model_and_scan):
    """TFLite files there already (a version of this export): names --overwrite; a version of another
    model: refused, naming why (its files would mix two models); foreign files: never touched."""
    from tfmedseg.export.__main__ import export_provenance, main
    from tfmedseg.io._atomic import write_marker

    run, _ = model_and_scan
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "model_float32.tflite").write_bytes(b"old")
    write_marker(version, "savedmodel", {**export_provenance(run, "m"), "formats": ["savedmodel"]})
    probe.exit2(main, ["--model", run, "--format", "tflite", "--output", version], "--overwrite", watch=tmp_path)
    assert (version / "model_float32.tflite").read_bytes() == b"old"
    write_marker(version, "savedmodel", {**export_provenance(tmp_path, "m"), "formats": ["savedmodel"]})
    probe.exit2(main, ["--model", run, "--format", "tflite", "--output", version], "another model", watch=tmp_path)
    foreign = tmp_path / "m" / "2"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    probe.exit2(main, ["--model", run, "--format", "tflite", "--output", foreign], "did not write", watch=tmp_path)


def test_model_with_nan_weights_is_refused_and_non_ct_scan_warned(tmp_path, probe, model_and_scan, capsys):
    import keras
    import nibabel as nib

    from tfmedseg.export.run_dir import save_for_export
    from tfmedseg.export.spec import ServingSpec
    from tfmedseg.predict import main

    run, scan = model_and_scan
    inp = keras.Input((None, None, 1), name="image")
    conv = keras.layers.Conv2D(2, 1, activation="softmax")
    model = keras.Model(inp, conv(inp))
    conv.kernel.assign(np.full(conv.kernel.shape, np.nan, np.float32))
    broken = save_for_export(model, tmp_path / "broken", ServingSpec(mode="2d", context_slices=1))
    probe.exit2(main, ["--model", broken, "--input", scan, "--output", tmp_path / "o.nii.gz"], "broken", watch=tmp_path,
                match="NaN")
    mri = tmp_path / "mri.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 3), 300.0, np.float32), np.eye(4)), str(mri))
    capsys.readouterr()
    assert main(["--model", str(run), "--input", str(mri), "--output", str(tmp_path / "mri_labels.nii.gz")]) == 0
    assert "expects CT in HU" in capsys.readouterr().err
