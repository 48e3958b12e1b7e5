"""``python -m tfmedseg.export`` on a run directory: SavedModel + TFLite + metadata, clear failures."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedseg.export.__main__ import main
from tfmedseg.export.run_dir import load_for_export, save_for_export
from tfmedseg.inference.spec import ServingSpec


@pytest.fixture(scope="module")
def other_run_dir(run_dir, tmp_path_factory):
    """The same network with other weights: another model."""
    path, model = run_dir
    other = keras.models.clone_model(model)
    other.set_weights([w + 0.01 for w in model.get_weights()])
    out = tmp_path_factory.mktemp("other_run")
    save_for_export(other, out, load_for_export(path).spec, info={"seed": "002", "config_hash": "other"},
                    representative=load_for_export(path).representative)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    keras.utils.set_random_seed(4)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(3, 1, activation="softmax", name="probabilities")(x)
    model = keras.Model(inp, out)
    spec = ServingSpec(mode="2.5d", input_size=(16, 16), context_slices=3, labels=("background", "liver", "tumour"))
    rep = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
    path = tmp_path_factory.mktemp("run")
    labels = np.argmax(model.predict(rep, verbose=0), axis=-1)[..., None]  # "ground truth" = Keras' own masks
    save_for_export(model, path, spec, info={"seed": "002", "config_hash": "abc"}, representative=rep,
                    representative_labels=labels)
    return path, model


def test_run_dir_round_trip(run_dir):
    path, model = run_dir
    bundle = load_for_export(path)
    assert bundle.spec.labels == ("background", "liver", "tumour")
    assert bundle.info["config_hash"] == "abc" and bundle.representative.shape == (4, 16, 16, 3)
    assert bundle.representative_labels.shape == (4, 16, 16, 1)
    x = bundle.representative
    np.testing.assert_allclose(bundle.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_export_all_writes_savedmodel_tflite_and_report(run_dir, tmp_path, capsys):
    path, model = run_dir
    out = tmp_path / "saved_models" / "liver" / "1"
    assert main(["--model", str(path), "--format", "all", "--output", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model_name"] == "liver" and meta["seed"] == "002"
    assert set(meta["tflite"]) == {"float32", "float16", "int8"}
    assert meta["tflite"]["float32"]["max_abs_diff"] < 1e-4
    assert meta["tflite"]["float32"]["dice_vs_keras"] == 1.0
    assert meta["tflite"]["float32"]["keras_dice_vs_truth"] == 1.0  # the labels were Keras' own masks
    assert meta["tflite"]["float32"]["dice_vs_truth"] == 1.0 and meta["tflite"]["float32"]["dice_drop_vs_keras"] == 0.0
    assert meta["tflite"]["int8"]["dice_drop_vs_keras"] == pytest.approx(1.0 - meta["tflite"]["int8"]["dice_vs_truth"])
    for q in ("float32", "float16", "int8"):
        assert (out / f"model_{q}.tflite").stat().st_size > 0
    loaded = tf.saved_model.load(str(out))
    x = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
    np.testing.assert_array_equal(loaded.signatures["serving_default"](image=tf.constant(x))["probabilities"].numpy(),
                                  model(x, training=False).numpy())
    assert "Dice vs Keras" in capsys.readouterr().out


def test_cli_errors_are_one_line_messages(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["--model", str(tmp_path / "run"), "--output", str(tmp_path / "m" / "1")]) == 2
    err = capsys.readouterr().err
    assert "model.keras" in err and str(tmp_path / "run") in err and "Traceback" not in err
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    assert main(["--model", str(bad), "--output", str(tmp_path / "m" / "1")]) == 2
    assert "bad.keras" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["tflite", "all"])
def test_failed_export_leaves_nothing_behind(run_dir, tmp_path, capsys, monkeypatch, fmt):
    """A conversion failing at the last variant (int8) leaves no version folder, no empty parents and
    no float32/float16 files behind; a folder that existed keeps exactly what it held."""
    import tfmedseg.export.tflite as tflite_module
    from tfmedseg.errors import ExportError

    real = tflite_module.convert_to_tflite

    def failing(model, quantization="float32", representative_data=None):
        if quantization == "int8":
            raise ExportError("calibration exploded", path=model.name)
        return real(model, quantization, representative_data)

    monkeypatch.setattr(tflite_module, "convert_to_tflite", failing)
    path, _ = run_dir
    out = tmp_path / "saved_models" / "liver" / "1"
    assert main(["--model", str(path), "--format", fmt, "--output", str(out)]) == 2
    assert "calibration exploded" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # not even saved_models/ or saved_models/liver/

    existing = tmp_path / "existing" / "1"
    assert main(["--model", str(path), "--format", "savedmodel", "--output", str(existing)]) == 0  # no TFLite in it
    before = _tree(existing)
    assert main(["--model", str(path), "--format", "tflite", "--output", str(existing)]) == 2
    assert "calibration exploded" in capsys.readouterr().err
    assert _tree(existing) == before


def test_failure_after_writing_removes_only_what_the_run_added(run_dir, tmp_path, monkeypatch):
    """A failure after files were written (here: the metadata update) leaves an existing folder
    exactly as it was: the run wrote into a staged copy of it."""
    import tfmedseg.export.__main__ as cli

    def broken_metadata(*args, **kwargs):
        raise OSError("disk full")

    path, _ = run_dir
    existing = tmp_path / "v" / "1"
    assert cli.main(["--model", str(path), "--format", "savedmodel", "--output", str(existing)]) == 0
    before = _tree(existing)
    real_atomic = cli.atomic_file

    def atomic_failing_for_json(path, suffix=""):
        if str(path).endswith(".json"):
            return broken_metadata()
        return real_atomic(path, suffix)

    monkeypatch.setattr(cli, "atomic_file", atomic_failing_for_json)
    with pytest.raises(OSError, match="disk full"):
        cli.main(["--model", str(path), "--format", "tflite", "--output", str(existing)])
    assert _tree(existing) == before and [p.name for p in existing.parent.iterdir()] == ["1"]


def test_multichannel_3d_model_savedmodel_is_a_clear_error(tmp_path, capsys):
    """A 2-channel 3D patch model (seed-004 PET/CT) has no generic raw-scan signature: one line, nothing written."""
    inp = keras.Input((8, 8, 8, 2), name="image")
    model = keras.Model(inp, keras.layers.Conv3D(2, 1, activation="softmax", name="probabilities")(inp))
    run = tmp_path / "run"
    save_for_export(model, run, ServingSpec(mode="3d_patch", patch_size=(8, 8, 8), labels=("background", "gtvt")), info={})
    out = tmp_path / "out" / "m" / "1"
    assert main(["--model", str(run), "--format", "all", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 input channels" in err and "--format tflite" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_tflite_into_an_existing_version_adds_files_and_the_same_rerun_is_done(run_dir, tmp_path, capsys, monkeypatch):
    """``--format tflite`` into a SavedModel version folder keeps the SavedModel and adds the TFLite
    files and report; a rerun refuses without ``--overwrite``; a failing ``--overwrite`` rerun leaves
    the folder exactly as the first run left it (staged copy, renamed at the end)."""
    import tfmedseg.export.tflite as tflite_module
    from tfmedseg.errors import ExportError

    path, _ = run_dir
    out = tmp_path / "m" / "1"
    assert main(["--model", str(path), "--format", "savedmodel", "--output", str(out)]) == 0
    pb = (out / "saved_model.pb").read_bytes()
    assert main(["--model", str(path), "--format", "tflite", "--output", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert {"saved_model.pb", "variables", "model_float32.tflite", "model_int8.tflite"} <= set(names)
    assert (out / "saved_model.pb").read_bytes() == pb
    meta = json.loads((out / "metadata.json").read_text())
    assert "serving_spec" in meta and set(meta["tflite"]) == {"float32", "float16", "int8"}
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]  # no staging left beside it
    capsys.readouterr()

    assert main(["--model", str(path), "--format", "tflite", "--output", str(out)]) == 0  # the same command again
    assert "holds this export" in capsys.readouterr().out
    snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def failing(model, quantization="float32", representative_data=None):
        raise ExportError("calibration exploded", path=model.name)

    monkeypatch.setattr(tflite_module, "convert_to_tflite", failing)
    assert main(["--model", str(path), "--format", "tflite", "--output", str(out), "--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == snapshot
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def test_failed_overwrite_keeps_the_previous_version(run_dir, tmp_path, monkeypatch):
    """``--format all --overwrite`` failing after the SavedModel was written keeps the old version folder."""
    import tfmedseg.export.__main__ as cli

    path, _ = run_dir
    out = tmp_path / "m" / "1"
    assert main(["--model", str(path), "--format", "savedmodel", "--output", str(out)]) == 0
    snapshot = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    meta = (out / "metadata.json").read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cli, "write_tflite_variants", broken)
    with pytest.raises(OSError, match="disk full"):
        main(["--model", str(path), "--format", "all", "--output", str(out), "--overwrite"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == snapshot
    assert (out / "metadata.json").read_text() == meta
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def _tree(root):
    """Bytes and mtime of every file below ``root``."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_export_again_says_it_is_done_without_importing_tensorflow(run_dir, tmp_path, capsys):
    """The rerun's done-check reads the marker and the run directory's small files only: it took 6-10 s (TensorFlow
    imported by ``check_export_dir``'s module before the check) where predict's takes 0.3 s."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    path, _ = run_dir
    out = tmp_path / "saved_models" / "liver" / "1"
    assert main(["--model", str(path), "--output", str(out)]) == 0
    capsys.readouterr()
    code = ("import sys; from tfmedseg.export.__main__ import main; "
            f"rc = main(['--model', {str(path)!r}, '--output', {str(out)!r}]); "
            "print('rc', rc, 'tensorflow imported', 'tensorflow' in sys.modules)")
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert "nothing to do" in done.stdout, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "rc 0 tensorflow imported False", done.stdout + done.stderr


def test_the_same_export_again_says_it_is_done_and_another_is_refused(run_dir, tmp_path, capsys):
    """The same run dir and format into the same version: exit 0, one line, nothing rewritten; the
    version recorded what made it (marker). Another run dir, another name, a format not in the
    folder or a version without a record: exit 2 naming the folder and --overwrite (not
    ``overwrite=True``). A foreign folder is never touched."""
    from tfmedseg.export.run_dir import save_for_export
    from tfmedseg.io._atomic import OUTPUT_MARKER

    path, model = run_dir
    out = tmp_path / "saved_models" / "liver" / "1"
    assert main(["--model", str(path), "--output", str(out)]) == 0
    capsys.readouterr()
    before = _tree(out)
    assert main(["--model", str(path), "--output", str(out)]) == 0
    assert capsys.readouterr().out == (f"{out} holds this export of {path} (savedmodel) already; nothing to do "
                                       "(pass --overwrite to export it again)\n")
    assert _tree(out) == before
    assert json.loads((out / OUTPUT_MARKER).read_text())["provenance"]["formats"] == ["savedmodel"]
    assert [p.name for p in out.parent.iterdir()] == ["1"]

    other = tmp_path / "other_run"
    save_for_export(model, other, load_for_export(path).spec, info={"seed": "002", "config_hash": "changed"})
    for argv in (["--model", str(other)], ["--model", str(path), "--name", "tumour"], ["--model", str(path), "--format", "all"]):
        assert main([*argv, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out}: ") and "--overwrite" in err and "overwrite=True" not in err and err.count("\n") == 1, err
        assert _tree(out) == before

    marker = json.loads((out / OUTPUT_MARKER).read_text())
    del marker["provenance"]  # a version written before exports recorded their provenance
    (out / OUTPUT_MARKER).write_text(json.dumps(marker))
    assert main(["--model", str(path), "--output", str(out)]) == 2
    capsys.readouterr()
    assert main(["--model", str(path), "--output", str(out), "--overwrite"]) == 0  # --overwrite replaces our own
    assert "holds this export" not in capsys.readouterr().out

    foreign = tmp_path / "saved_models" / "spleen" / "1"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep")
    (foreign / OUTPUT_MARKER.replace(".json", ".txt")).write_text("not ours")
    for extra in ([], ["--overwrite"]):
        assert main(["--model", str(path), "--output", str(foreign), *extra]) == 2
    assert sorted(p.name for p in foreign.iterdir()) == [".tfmedseg-output.txt", "notes.txt"]


def test_the_same_export_into_another_version_says_where_it_is(run_dir, tmp_path, capsys):
    """``<name>/2`` while ``<name>/1`` holds this export (run dir, name, formats): exit 0 naming
    version 1, nothing written (TF Serving would serve the same model twice); ``--overwrite``
    exports it again; the highest version holding it is named; another name is another export."""
    path, _ = run_dir
    root = tmp_path / "saved_models" / "liver"
    assert main(["--model", str(path), "--output", str(root / "1")]) == 0
    capsys.readouterr()
    before = _tree(root)
    assert main(["--model", str(path), "--output", str(root / "2")]) == 0
    assert capsys.readouterr().out == (f"{root / '1'} holds this export of {path} (savedmodel) already; nothing to do "
                                       f"(pass --overwrite to export it again as {root / '2'})\n")
    assert _tree(root) == before and [p.name for p in root.iterdir()] == ["1"]
    assert main(["--model", str(path), "--format", "all", "--output", str(root / "2")]) == 0  # a format v1 lacks
    assert "holds this export" not in capsys.readouterr().out and (root / "2" / "model_float32.tflite").is_file()

    assert main(["--model", str(path), "--output", str(root / "2"), "--overwrite"]) == 0  # asked for: written
    assert "holds this export" not in capsys.readouterr().out and (root / "2" / "saved_model.pb").is_file()
    assert main(["--model", str(path), "--output", str(root / "3")]) == 0
    assert capsys.readouterr().out.startswith(f"{root / '2'} holds this export of {path} (savedmodel) already")
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]
    assert main(["--model", str(path), "--name", "tumour", "--output", str(root / "3")]) == 0
    assert "holds this export" not in capsys.readouterr().out and (root / "3" / "saved_model.pb").is_file()


def test_tflite_into_another_models_version_is_refused(run_dir, other_run_dir, tmp_path, capsys):
    """``--format tflite`` into a version of another export, of an export that records no model, or of
    another output: exit 2, one line naming the folder and why, nothing changed; ``--overwrite``
    replaces that version with this export (recorded, so the same command again is done)."""
    from tfmedseg.io._atomic import OUTPUT_MARKER

    path, _ = run_dir
    out = tmp_path / "m" / "1"
    assert main(["--model", str(path), "--format", "savedmodel", "--output", str(out)]) == 0
    capsys.readouterr()
    before = _tree(out)
    assert main(["--model", str(other_run_dir), "--format", "tflite", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: holds the export of another model ({path} as 'm')") and err.count("\n") == 1, err
    assert f"adding the TFLite files of {other_run_dir} would mix two models" in err and "--overwrite" in err
    assert _tree(out) == before

    marker = json.loads((out / OUTPUT_MARKER).read_text())
    unrecorded = {key: value for key, value in marker.items() if key != "provenance"}
    for record, says in ((unrecorded, "an export that records no model"),
                         ({**unrecorded, "kind": "predict"}, "a 'predict' output of tfmedseg")):
        (out / OUTPUT_MARKER).write_text(json.dumps(record))
        assert main(["--model", str(path), "--format", "tflite", "--output", str(out)]) == 2  # even the same run dir
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out}: holds {says}") and err.count("\n") == 1, err
    (out / OUTPUT_MARKER).write_text(json.dumps(marker))
    before = _tree(out)

    # --overwrite would leave m/1 without its SavedModel: TF Serving could not load it, refused
    assert main(["--model", str(other_run_dir), "--format", "tflite", "--output", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: would replace its SavedModel with TFLite files only; TF Serving fails") and (
        "Use this export's SavedModel version as --output, --format all, or --output" in err), err
    assert _tree(out) == before

    out = tmp_path / "m_tflite" / "1"  # a base path of TFLite-only versions: --overwrite replaces another model's
    assert main(["--model", str(path), "--format", "tflite", "--output", str(out)]) == 0
    assert main(["--model", str(other_run_dir), "--format", "tflite", "--output", str(out)]) == 2
    assert "holds the export of another model" in capsys.readouterr().err
    assert main(["--model", str(other_run_dir), "--format", "tflite", "--output", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name != OUTPUT_MARKER) == [
        "metadata.json", "model_float16.tflite", "model_float32.tflite", "model_int8.tflite"]
    recorded = json.loads((out / OUTPUT_MARKER).read_text())["provenance"]
    assert recorded["formats"] == ["tflite"] and recorded["model"]["path"] == str(other_run_dir)
    capsys.readouterr()
    assert main(["--model", str(other_run_dir), "--format", "tflite", "--output", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out} holds this export of {other_run_dir} (tflite) already; nothing to do")


def test_tflite_only_version_beside_savedmodel_versions_is_refused(run_dir, tmp_path, capsys):
    """TF Serving takes every numeric folder of a base path as a version and loads the newest: a
    ``--format tflite`` version ``<name>/<N>`` without saved_model.pb beside SavedModel versions is
    refused before any work (exit 2, one line naming the SavedModel versions and the ways out), also
    with ``--overwrite``; into a non-numeric folder or a base path of TFLite-only versions it is written."""
    path, _ = run_dir
    root = tmp_path / "m"
    assert main(["--model", str(path), "--format", "savedmodel", "--output", str(root / "1")]) == 0
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert main(["--model", str(path), "--format", "tflite", "--output", str(root / "2"), *extra]) == 2
        err = capsys.readouterr().err
        assert err == (f"error: {root / '2'}: would hold TFLite files only beside SavedModel versions (1); TF Serving "
                       f"fails on such a version. Use --output {root / '1'}, --format all, or --output "
                       f"{tmp_path / 'm_tflite' / '2'}\n"), err
        assert sorted(p.name for p in root.iterdir()) == ["1"]
    assert main(["--model", str(path), "--format", "tflite", "--output", str(tmp_path / "m_tflite" / "2")]) == 0
    assert (tmp_path / "m_tflite" / "2" / "model_float32.tflite").is_file()


def test_export_names_an_unservable_newest_version_left_by_an_older_export(run_dir, tmp_path, capsys):
    """A newest numeric folder without saved_model.pb beside SavedModel versions (TFLite files only, as an older
    tfmedseg's ``--format tflite`` wrote) is the version TF Serving's ``latest`` policy loads and fails on: the
    export command says so in one warning line naming the folder and the way out, touching nothing there; once a
    newer SavedModel version exists, nothing is said."""
    path, _ = run_dir
    root = tmp_path / "m"
    assert main(["--model", str(path), "--format", "savedmodel", "--output", str(root / "1")]) == 0
    assert capsys.readouterr().err == ""
    old = root / "2"
    old.mkdir()
    (old / "model_float32.tflite").write_bytes(b"TFL3")
    (old / "metadata.json").write_text("{}")
    warning = (f"warning: {old}: newest version of {root} but no saved_model.pb (TFLite files only?): TF Serving loads "
               f"it and fails; move it out, e.g. to {tmp_path / 'm_tflite' / '2'}\n")
    assert main(["--model", str(path), "--format", "tflite", "--output", str(root / "1")]) == 0  # added to 1
    assert capsys.readouterr().err == warning
    assert main(["--model", str(path), "--format", "tflite", "--output", str(root / "1")]) == 0  # nothing to do
    assert capsys.readouterr().err == warning
    assert sorted(p.name for p in old.iterdir()) == ["metadata.json", "model_float32.tflite"]
    assert main(["--model", str(path), "--format", "all", "--output", str(root / "3"), "--overwrite"]) == 0
    assert capsys.readouterr().err == ""
