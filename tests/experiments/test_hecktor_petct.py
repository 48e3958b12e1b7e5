"""Seed-004 experiment: a tiny configuration end to end (default run), the quick one marked slow;
the in-graph PET/CT serving signature equals the numpy pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.errors import ConfigError
from tfmedseg.experiments import hecktor_petct
from tfmedseg.io.nifti import read_nifti

# The seed's SE U-Net with SE instance norm at 2 filters (its first training step traced for minutes
# before the fused optimizers and the eager optimizer build; now about as long as the basic U-Net's).
TINY = ["--phantom-cases", "3", "--set", "cube_size=32", "--set", "spacing_mm=4.5", "--set", "model=se_unet",
        "--set", "model_kwargs.base_filters=2", "--set", "model_kwargs.norm=se_instance", "--set", "train.epochs=1", "--set", "samples_per_epoch=1",
        "--set", "batch_size=1", "--set", "train.image_every_epochs=0"]


def test_tiny_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                   "--set", f"export_dir={tmp_path / 'saved_models'}"]
    assert hecktor_petct.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Normalization | Filters | Batch | Augmentation | DSC |" in printed
    assert "| InstanceNorm3d | 2 | 1 | rotation + mirroring |" in printed
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert 0.0 <= summary["dsc mean"] <= 1.0 and summary["patients"] == 1
    rows = (out / "per_patient.csv").read_text().splitlines()
    assert rows[0].startswith("patient,center,dsc,precision,recall,hd95_mm") and len(rows) == 2
    # the prediction lies on the original CT grid with its header, inside the cube
    pid = rows[1].split(",")[0]
    [pred] = list((out / "predictions").glob(f"{pid}.nii.gz"))
    ct_path = next((tmp_path / "cache" / "phantoms").rglob(f"{pid}_ct.nii.gz"))
    seg, ct = read_nifti(pred, "SEG"), read_nifti(ct_path, "CT")
    assert seg.array.shape == ct.array.shape
    np.testing.assert_allclose(seg.meta["source_affine"], ct.meta["source_affine"])
    assert set(np.unique(seg.array)) <= {0, 1}
    # the raw-scan signature runs on CT + PET and returns labels on the input grid
    sm = tf.saved_model.load(str(tmp_path / "saved_models" / "hecktor_petct" / "1"))
    scan = np.random.default_rng(0).normal(0, 300, (40, 36, 34)).astype(np.float32)
    res = sm.signatures["segment_petct"](ct=tf.constant(scan), pet=tf.constant(np.abs(scan) / 100),
                                         box_start=tf.constant([4, -2, 5], tf.int32))
    assert res["labels"].shape == (40, 36, 34) and res["probability"].shape == (32, 32, 32)
    assert (out / "model" / "model.keras").is_file() and (out / "model" / "representative.npz").is_file()
    assert (out / "config.yaml").is_file()
    # validation GTVt Dice per epoch reaches TensorBoard (and history.csv)
    tags = {v.tag for f in (out / "train" / "logs" / "validation").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(f)) for v in event.summary.value}
    assert "epoch_dice" in tags and "epoch_loss" in tags
    assert "val_dice" in (out / "train" / "history.csv").read_text().splitlines()[0]
    _run_documented_commands(out, tmp_path / "docs")


def _run_documented_commands(run_dir, work):
    """Issue 13: each documented ``python -m tfmedseg.export`` line for a HECKTOR run (docs/export.md)
    runs on the tiny run (``runs/hecktor_petct`` -> the run, ``--output`` under ``work``)."""
    import importlib.util
    import pathlib

    from tfmedseg.export import __main__ as export_cli

    spec = importlib.util.spec_from_file_location("_documented", pathlib.Path(__file__).with_name("_documented.py"))
    documented = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(documented)
    commands = [argv for module, argv in documented.documented_commands()
                if "hecktor_petct" in argv[argv.index("--model") + 1]]
    assert commands and all(module == "export" for module, argv in documented.documented_commands()
                            if "hecktor_petct" in argv[argv.index("--model") + 1])
    for k, argv in enumerate(commands):
        values = {"--model": lambda v: v.replace("runs/hecktor_petct", str(run_dir)),
                  "--output": lambda v, k=k: str(work / f"cmd{k}" / v)}
        argv = [values[argv[i - 1]](a) if i and argv[i - 1] in values else a for i, a in enumerate(argv)]
        assert export_cli.main(argv) == 0, argv
        output = pathlib.Path(argv[argv.index("--output") + 1])
        assert sorted(p.name for p in output.glob("*.tflite")) == ["model_float16.tflite", "model_float32.tflite",
                                                                    "model_int8.tflite"]


def test_segment_petct_equals_the_numpy_pipeline(tmp_path):
    import keras

    from tfmedseg.export.petct import export_petct_savedmodel
    from tfmedseg.inference.petct import predict_cube
    from tfmedseg.models import registry
    from tfmedseg.preprocessing.petct import scale_ct

    keras.utils.set_random_seed(1)
    net = registry.build("se_unet", input_shape=(16, 16, 16, 2), base_filters=2)
    rng = np.random.default_rng(1)
    ct = rng.normal(0, 500, (40, 40, 40)).astype(np.float32)
    pet = rng.gamma(2.0, 1.0, (40, 40, 40)).astype(np.float32)
    start = np.array([3, 20, 5], np.int32)  # the cube leaves the scan along H: padded with -1024 HU / SUV 0
    path = export_petct_savedmodel(net, tmp_path / "m" / "1", cube_size=32, spacing_mm=1.0, model_name="t")
    res = tf.saved_model.load(str(path)).signatures["segment_petct"](
        ct=tf.constant(ct), pet=tf.constant(pet), box_start=tf.constant(start))
    ct_pad = np.pad(ct, ((0, 0), (0, 12), (0, 0)), constant_values=-1024)
    pet_pad = np.pad(pet, ((0, 0), (0, 12), (0, 0)))
    sl = tuple(slice(s, s + 32) for s in start)
    cube = np.stack([scale_ct(ct_pad[sl]), pet_pad[sl]], axis=-1)
    expected = predict_cube(net, cube, (16, 16, 16), overlap=0.0)  # non-overlapping tiles, as in the graph
    np.testing.assert_allclose(res["probability"].numpy(), expected, atol=1e-5)
    labels = res["labels"].numpy()
    np.testing.assert_array_equal(labels[3:35, 20:40, 5:37], (expected > 0.5)[:, :20])
    assert labels.sum() == (expected > 0.5)[:, :20].sum()


def test_bad_configuration_fails_before_training(tmp_path, capsys):
    assert hecktor_petct.main(["--set", "split=3:1", "--output-dir", str(tmp_path)]) == 2
    assert "split" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="patch_size"):
        hecktor_petct.HecktorConfig(cube_size=144, patch_size=40)


@pytest.mark.slow
def test_quick_config_learns_on_phantoms(tmp_path):
    """The default command on the default phantoms (about 15 minutes on 2 quiet cores)."""
    out = tmp_path / "run"
    assert hecktor_petct.main(["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                               "--set", f"export_dir={tmp_path / 'saved_models'}"]) == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["dsc mean"] >= 0.65
