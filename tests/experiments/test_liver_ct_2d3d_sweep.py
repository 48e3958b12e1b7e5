"""Issue 17: the seed-002 sweep (resumable per configuration), its report (stage 2 and cascade,
thesis-style timing, Tables 4.2-4.8) and the paper config against the thesis."""

from __future__ import annotations

import json

import keras
import pytest

from tfmedseg.config import load_config
from tfmedseg.experiments import liver_ct_2d3d, sweep
from tfmedseg.experiments.cli import resolve_config_path
from tfmedseg.models import registry
from tfmedseg.reports.lits_sweep import NETWORKS, VARIANTS, sweep_report



@registry.register("_sweep_tiny_a_2d")
def _tiny_a(input_shape, classes=2, variant="default"):
    """A 2-convolution stand-in for the seed-002 networks (the sweep machinery, not the networks, is tested)."""
    inp = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inp, keras.layers.Conv2D(classes, 1, activation="softmax")(x))


@registry.register("_sweep_tiny_b_2d")
def _tiny_b(input_shape, classes=2, variant="default"):
    inp = keras.Input(input_shape)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, keras.layers.Conv2D(classes, 1, activation="softmax")(x))


#: A 2-configuration sweep on 4 phantoms at 32 x 32 with tiny networks, 3 steps, 1 epoch (SWA over it).
TINY_SWEEP = [
    "--config", "sweep_quick", "--phantom-cases", "4", "--set", "inplane_size=32", "--set", "validation_fraction=0.25",
    "--set", "sweep.networks=[_sweep_tiny_a_2d,_sweep_tiny_b_2d]", "--set", "sweep.variants=[default]",
    "--set", "sweep.complexity_size=32", "--set", "liver.model=_sweep_tiny_a_2d",
    "--set", "liver.augmentation=null", "--set", "tumour.augmentation=null",
    "--set", "liver.steps_per_epoch=2", "--set", "tumour.steps_per_epoch=3", "--set", "liver.validation_steps=1",
    "--set", "tumour.validation_steps=1", "--set", "liver.train.epochs=1", "--set", "tumour.train.epochs=1",
    "--set", "liver.batch_size=2", "--set", "tumour.batch_size=2", "--set", "tumour.train.swa_start_epoch=0",
    "--set", "liver.train.tensorboard=false", "--set", "tumour.train.tensorboard=false",
]


class Killed(Exception):
    """Stands for the process being killed right after the first configuration finished."""


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Run the tiny sweep killed after its first row, then rerun it twice (resume, done)."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "run"
    argv = TINY_SWEEP + ["--output-dir", str(out), "--cache-dir", str(tmp / "cache")]
    original_write, original_run = sweep._write_row, liver_ct_2d3d.cascade_run
    written, started = [], []

    def write(directory, entry, row):
        written.append(entry.name)
        return original_write(directory, entry, row)

    def run_then_die(*args, **kwargs):
        started.append(1)
        if len(started) == 2:  # the process dies as the second configuration starts
            raise Killed()
        return original_run(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(sweep, "_write_row", write)
    try:
        mp.setattr(liver_ct_2d3d, "cascade_run", run_then_die)
        with pytest.raises(Killed):
            liver_ct_2d3d.main(argv)
        mp.setattr(liver_ct_2d3d, "cascade_run", original_run)
        first = out / "sweep" / "_sweep_tiny_a_2d-default"
        partial = (out / "summary.md").read_text()
        stamp = (first / "tumour" / "train_seconds.json").stat().st_mtime_ns, (first / "row.json").stat().st_mtime_ns
        resumed = _main_log(argv, out)
        done = _main_log(argv, out)
    finally:
        mp.undo()
    return {"out": out, "written": written, "partial": partial, "stamp": stamp, "resumed": resumed, "done": done,
            "first": first}


def _main_log(argv, out):
    """The log lines and printed output of one run."""
    import contextlib
    import io

    log = out / "log.txt"
    before = log.read_text() if log.is_file() else ""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert liver_ct_2d3d.main(argv) == 0
    return (log.read_text()[len(before):] if log.is_file() else "") + printed.getvalue()


def test_killed_sweep_resumes_without_retraining_finished_configurations(tiny_sweep):
    t = tiny_sweep
    assert t["written"] == ["_sweep_tiny_a_2d-default", "_sweep_tiny_b_2d-default"]  # each row trained once
    assert "1 of 2 configuration(s) finished; pending: _sweep_tiny_b_2d-default" in t["partial"]
    first = t["first"]
    assert ((first / "tumour" / "train_seconds.json").stat().st_mtime_ns, (first / "row.json").stat().st_mtime_ns) == t["stamp"]
    assert "finished already (_sweep_tiny_a_2d-default): not run again" in t["resumed"]
    assert "configuration 2/2: _sweep_tiny_b_2d-default" in t["resumed"]
    assert "configuration 1/2" not in t["resumed"]
    assert "holds a finished run" in t["done"] and "training stage" not in t["done"]  # the third run: done
    summary = json.loads((t["out"] / "summary.json").read_text())
    assert summary["summary"] == {"finished": 2, "pending": 0} and len(summary["rows"]) == 2


def test_sweep_report_holds_both_evaluations_timing_and_tables(tiny_sweep):
    out = tiny_sweep["out"]
    rows = json.loads((out / "summary.json").read_text())["rows"]
    for row in rows:
        for key in ("stage 2 tumour Dice/case", "stage 2 tumour global Dice", "tumour Dice/case", "liver Dice/case",
                    "swa stage 2 tumour Dice/case"):
            assert 0.0 <= row[key] <= 1.0, (row["model"], key)
        assert 0 < row["train_s_per_slice"] < 60 and row["train_s_per_slice_std"] >= 0  # t/b per iteration
        assert 0 < row["predict_s_per_slice"] < 60  # t/b per prediction batch
        assert row["params_m"] > 0 and row["macs_m"] > 0  # counted at sweep.complexity_size
    text = (out / "summary.md").read_text()
    for table in ("Table 4.2", "Table 4.4", "Table 4.6", "Table 4.8-style"):
        assert table in text
    assert "2 of 2 configuration(s) finished" in text and "Table 4.3" not in text  # no 3D network swept
    # each configuration's own report names both evaluations and the per-iteration timing
    row_report = (out / "sweep" / "_sweep_tiny_b_2d-default" / "summary.md").read_text()
    assert "Stage 2 alone: tumour network on the reference liver" in row_report
    assert "_sweep_tiny_b_2d/default (best)" in row_report and "_sweep_tiny_b_2d/default (swa)" in row_report
    assert "train t/b per iteration" in row_report and "predict t/(b z) per batch" in row_report
    per_case = (out / "sweep" / "_sweep_tiny_b_2d-default" / "per_case.csv").read_text()
    assert "stage 2 (reference liver)" in per_case and "cascade" in per_case
    # the liver stage was trained once, shared by both rows
    assert (out / "liver" / "best.weights.h5").is_file() and not (out / "sweep" / "_sweep_tiny_b_2d-default" / "liver").exists()


def test_sweep_report_lists_all_21_configurations_with_the_thesis_figures():
    configs = [(n, v) for n in NETWORKS for v in VARIANTS]
    row = {"model": "dsts_3d", "variant": "bottom", "macs_m": 55.0, "params_m": 2.9, "train_s_per_slice": 0.5,
           "train_s_per_slice_std": 0.01, "predict_s_per_slice": 0.1, "predict_s_per_slice_std": 0.0,
           "stage 2 tumour Dice/case": 0.61, "stage 2 tumour Dice small": 0.25, "tumour Dice/case": 0.58}
    text = sweep_report([row], configs, title="t", pending=["x"])
    for n in ("4.2", "4.3", "4.4", "4.5", "4.6", "4.7"):
        assert f"Table {n}:" in text
    assert text.count("pending") >= 20 * 4  # every unfinished row in each of its tables
    assert "3D DSTS bottom (Table 4.8) | done | 55.00 | 55.19 | 2.900 | 2.88 |" in text
    assert "2D MobileNet-V2 top (Table 4.8) | pending |" in text and "3D MobileNet-V2 top (Table 4.8)" in text
    assert "0.250 (0.289)" in text  # ours (thesis) in Table 4.7


def test_row_of_other_settings_is_refused(tmp_path):
    entry = sweep.SweepEntry("a", {"x": 1})
    sweep._write_row(tmp_path / "a", entry, {"v": 1})
    assert sweep.read_row(tmp_path / "a", entry) == {"v": 1}
    with pytest.raises(Exception, match="other settings"):
        sweep.read_row(tmp_path / "a", sweep.SweepEntry("a", {"x": 2}))
    with pytest.raises(Exception, match="repeat"):
        sweep.run_sweep([entry, entry], lambda e, d: {}, tmp_path)


#: Table A.2 (L1411-1417): the thesis' 20 validation volumes.
TABLE_A2 = {100, 109, 112, 121, 125, 129, 24, 25, 30, 32, 38, 35, 37, 4, 50, 56, 69, 71, 77, 84}


def test_paper_config_matches_the_thesis():
    """``experiments/liver_ct_2d3d.yaml`` resolved against seed 002 (spec Sec. 1, 3, 5, 7)."""
    cfg = load_config(liver_ct_2d3d.LiverCT2D3DConfig, resolve_config_path("paper", "liver_ct_2d3d"))
    assert set(cfg.validation_ids) == TABLE_A2 and len(cfg.validation_ids) == 20
    assert tuple(cfg.hu_window) == (-200.0, 200.0) and cfg.inplane_size == 256  # L757, L1012: 512 -> 256
    assert cfg.liver.model == cfg.tumour.model == "mobilenetv2_2d" and cfg.tumour.variant == "top"  # Table 4.8, 4.64M
    for stage in (cfg.liver, cfg.tumour):
        g = stage.geometry
        assert (g.rank, g.context_slices, g.output_slices) == (2, 9, 1)  # L819: 9 slices -> the middle one
        assert stage.order == "volume"  # L776: every slice once, volume by volume
        assert stage.augmentation == "seed002_table31"
        t = stage.train
        assert t.optimizer == "radam" and t.lookahead and t.warmup_epochs > 0  # L854-858
        assert t.reduce_lr_patience > 0 and t.early_stopping_patience > 0  # L856, L865
        assert stage.select_weights == "best" and t.swa_start_epoch >= 0 and not t.swa_replace  # L865
    slab = liver_ct_2d3d.SLAB_3D
    assert (slab.context_slices, slab.output_slices) == (8, 4)  # L825-827
    swept = load_config(liver_ct_2d3d.LiverCT2D3DConfig, resolve_config_path("sweep", "liver_ct_2d3d"))
    assert len(swept.sweep.networks) * len(swept.sweep.variants) == 21 and swept.inplane_size == 256


@pytest.mark.slow
def test_sweep_of_a_2d_and_a_3d_network(tmp_path):
    """The real networks on both geometries (2.5D stacks, 3D slabs: t/(b z) with z = 4), tiny budget."""
    out = tmp_path / "run"
    argv = ["--config", "sweep_quick", "--phantom-cases", "4", "--set", "validation_fraction=0.25",
            "--set", "sweep.networks=[mobilenetv2_2d,dsts_3d]", "--set", "sweep.variants=[bottom]",
            "--set", "liver.steps_per_epoch=2", "--set", "tumour.steps_per_epoch=3", "--set", "liver.validation_steps=1",
            "--set", "tumour.validation_steps=1", "--set", "liver.train.epochs=1", "--set", "tumour.train.epochs=2",
            "--set", "tumour.train.swa_start_epoch=1", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert liver_ct_2d3d.main(argv) == 0
    rows = {r["model"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert rows["dsts_3d"]["params_m"] == pytest.approx(2.61, abs=0.01)  # at 8 x 256 x 256 (Table 4.3: 2.88)
    assert rows["mobilenetv2_2d"]["params_m"] == pytest.approx(5.42, abs=0.01)  # Table 4.2: 6.37
    for row in rows.values():
        assert 0 < row["predict_s_per_slice"] < row["train_s_per_slice"] * 100
    text = (out / "summary.md").read_text()
    assert "3D DSTS bottom (Table 4.8) | done |" in text and "Table 4.3" in text and "Table 4.7" in text
