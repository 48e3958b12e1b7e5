"""Seed-002 experiment end to end: a tiny configuration in the default run, the quick one marked slow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ConfigError
from tfmedseg.experiments import liver_ct_2d3d
from tfmedseg.io.nifti import read_nifti

TINY = [
    "--phantom-cases", "4", "--set", "inplane_size=64", "--set", "validation_fraction=0.25",
    "--set", "liver.steps_per_epoch=2", "--set", "tumour.steps_per_epoch=2",
    "--set", "liver.validation_steps=1", "--set", "tumour.validation_steps=1",
    "--set", "liver.train.epochs=1", "--set", "tumour.train.epochs=1",
    "--set", "liver.batch_size=2", "--set", "tumour.batch_size=2",
    "--set", "liver.train.image_every_epochs=1", "--set", "tumour.train.tensorboard=false",
]


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    argv = TINY + ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                   "--set", f"export_dir={tmp_path / 'saved_models'}"]
    assert liver_ct_2d3d.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert 0.0 <= summary["liver Dice/case"] <= 1.0
    assert (out / "per_case.csv").read_text().count("\n") == 2  # header + 1 validation case
    text = (out / "summary.md").read_text()
    assert "Dice by lesion size" in text and "IoU >= 0.5" in text and "predict (whole cascade)" in text
    assert (out / "montage.png").stat().st_size > 0
    # LiTS submission: labels 0/1/2 with the source geometry
    [sub] = list((out / "submission").glob("test-segmentation-*.nii"))
    index = sub.name.split("-")[-1].split(".")[0]
    src = next((tmp_path / "cache" / "phantoms").glob("lits-*")).rglob(f"volume-{index}.nii*").__next__()
    seg, ct = read_nifti(sub, "SEG"), read_nifti(src, "CT")
    np.testing.assert_allclose(seg.meta["source_affine"], ct.meta["source_affine"])
    assert set(np.unique(seg.array)) <= {0, 1, 2}
    # export: run-dir contract for each stage and one cascade SavedModel
    assert (out / "liver_model" / "model.keras").is_file() and (out / "tumour_model" / "representative.npz").is_file()
    export = tmp_path / "saved_models" / "liver_ct_2d3d" / "1"
    labels = tf.saved_model.load(str(export)).signatures["segment"](scan=tf.constant(ct.array[:12]))["labels"].numpy()
    assert labels.shape == (12, *ct.array.shape[1:]) and set(np.unique(labels)) <= {0, 1, 2}
    assert (out / "config.yaml").is_file() and list((out / "liver" / "logs").rglob("events.*"))


def test_bad_configuration_fails_before_training(tmp_path, capsys):
    assert liver_ct_2d3d.main(["--set", "cascade.combination=multiply", "--output-dir", str(tmp_path)]) == 2
    assert "combination" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="inplane_size"):
        liver_ct_2d3d.LiverCT2D3DConfig(inplane_size=0)


@pytest.mark.slow
def test_quick_config_learns_on_phantoms(tmp_path):
    """The default command on the default phantoms (about 10 minutes on 2 cores)."""
    out = tmp_path / "run"
    assert liver_ct_2d3d.main(["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                               "--set", f"export_dir={tmp_path / 'saved_models'}"]) == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["liver Dice/case"] >= 0.90
    assert summary["tumour Dice/case"] >= 0.50
