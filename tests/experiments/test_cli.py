"""The shared experiment command line: config resolution, phantom preparation, outputs."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from tfmedseg.errors import ConfigError, DatasetLayoutError
from tfmedseg.experiments.cli import parse_experiment_args


@dataclasses.dataclass
class Cfg:
    epochs: int = 10
    lr: float = 1e-3


def _fake_phantoms(calls):
    def prepare(dataset, out_dir, cases, seed):
        calls.append((dataset, cases, seed))
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir

    return prepare


def _parse(argv, calls, default_config=None):
    return parse_experiment_args(
        argv,
        prog="tfmedseg.experiments.demo",
        description="demo",
        config_cls=Cfg,
        default_config=default_config,
        phantom_dataset="lits",
        default_phantom_cases=3,
        prepare_phantoms=_fake_phantoms(calls),
    )


def test_phantoms_by_default_and_resolved_config_written(tmp_path):
    calls = []
    ctx = _parse(["--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                  "--set", "epochs=2", "--seed", "7"], calls)
    assert calls == [("lits", 3, 7)]
    assert ctx.used_phantoms and ctx.seed == 7
    assert ctx.data_dir == tmp_path / "cache" / "phantoms" / "lits-n3-s7"
    assert ctx.config == Cfg(epochs=2)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == {"epochs": 2, "lr": 1e-3}


def test_data_dir_and_yaml_config(tmp_path):
    calls = []
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "quick.yaml"
    cfg.write_text("lr: 0.5\n")
    ctx = _parse(["--data-dir", str(tmp_path / "data"), "--config", str(cfg),
                  "--output-dir", str(tmp_path / "out")], calls)
    assert calls == [] and not ctx.used_phantoms
    assert ctx.config.lr == 0.5


def test_missing_data_dir_and_bad_key_are_clear_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="nowhere"):
        _parse(["--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o" / "run")], [])
    assert not (tmp_path / "o").exists()  # a typo'd --data-dir leaves no empty run folder behind
    with pytest.raises(ConfigError, match="epoch"):
        _parse(["--set", "epoch=1", "--output-dir", str(tmp_path / "o")], [])
    with pytest.raises(ConfigError, match="missing.yaml"):
        _parse(["--config", str(tmp_path / "missing.yaml")], [])


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as info:
        _parse(["--help"], [])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--data-dir" in out
    assert out.startswith("usage: python -m tfmedseg.experiments.demo ")  # the command to type, as predict/export show it


def test_configs_ship_in_the_package_and_resolve_by_name(tmp_path, monkeypatch):
    from tfmedseg.experiments import cli

    assert cli.CONFIG_DIR.name == "configs" and cli.CONFIG_DIR.parent.name == "tfmedseg"
    names = cli.available_configs("liver_ct_2d3d")
    assert names["quick"].name == "liver_ct_2d3d_quick.yaml" and names["paper"].name == "liver_ct_2d3d.yaml"
    monkeypatch.chdir(tmp_path)  # names never depend on the working directory
    assert cli.resolve_config_path("quick", "liver_ct_2d3d") == names["quick"]
    assert cli.resolve_config_path("paper", "bone_malignet").name == "bone_malignet.yaml"
    assert cli.resolve_config_path("liver_ct_2d3d_quick.yaml", "bone_malignet") == names["quick"]
    assert cli.resolve_config_path("liver_ct_2d3d_quick", None) == names["quick"]
    own = tmp_path / "quick"  # an existing path wins over a name
    own.write_text("lr: 0.1\n")
    assert cli.resolve_config_path("quick", "liver_ct_2d3d").resolve() == own
    with pytest.raises(ConfigError, match="config names: paper, quick"):
        cli.resolve_config_path("nonsense", "liver_ct_2d3d")
    with pytest.raises(ConfigError, match="not a file"):
        cli.resolve_config_path(str(tmp_path), "liver_ct_2d3d")


def test_config_by_name_and_help_lists_names(tmp_path, capsys):
    from tfmedseg.experiments import cli

    cdir = tmp_path / "configs"
    cdir.mkdir()
    (cdir / "demo.yaml").write_text("epochs: 300\n")
    (cdir / "demo_quick.yaml").write_text("epochs: 1\n")
    (cdir / "demo_table2.yaml").write_text("epochs: 5\n")
    import unittest.mock

    from tfmedseg.experiments import arguments

    with unittest.mock.patch.object(arguments, "CONFIG_DIR", cdir):
        assert list(cli.available_configs("demo")) == ["paper", "quick", "table2"]
        for name, epochs in (("quick", 1), ("paper", 300), ("table2", 5)):
            ctx = _parse(["--config", name, "--output-dir", str(tmp_path / "o")], [])
            assert ctx.config.epochs == epochs
        assert _parse(["--output-dir", str(tmp_path / "o")], [], default_config="quick").config.epochs == 1
        with pytest.raises(SystemExit):
            _parse(["--help"], [], default_config="quick")
    out = capsys.readouterr().out
    assert "(default: quick)" in " ".join(out.split())
    for line in ("paper   demo.yaml", "quick   demo_quick.yaml", "table2  demo_table2.yaml"):
        assert line in out
    assert "-v, --verbose" in out and "-q, --quiet" in out


def test_final_output_names_the_run_directory_and_main_files(tmp_path, capsys):
    from tfmedseg.experiments import cli

    out = tmp_path / "run"
    (out / "liver").mkdir(parents=True)
    (out / "liver" / "best.weights.h5").write_bytes(b"x")
    for name in ("per_case.csv", "summary.md", "config.yaml", "log.txt", ".hidden"):
        (out / name).write_text("x")
    ctx = cli.ExperimentContext(None, tmp_path, out, 0, True)
    ctx.exports.append(tmp_path / "saved_models" / "demo" / "1")

    def run(c):
        assert c.output_dir == out

    import unittest.mock

    with unittest.mock.patch.object(cli, "parse_experiment_args", lambda argv, **kw: ctx):
        assert cli.experiment_main([], run) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"results in {out}/", "  summary.md", "  per_case.csv", "  config.yaml", "  log.txt",
                     "  liver/ (1 files)", f"exported {tmp_path / 'saved_models' / 'demo' / '1'}"]


EXPERIMENTS = ("liver_ct_2d3d", "bone_malignet", "liver_lesion_fusion", "maa_spect_liver", "hecktor_petct")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_help_lists_the_configs_without_importing_tensorflow(name):
    """``python -m tfmedseg.experiments.<name> --help`` (a fresh interpreter): exit 0, the config names
    ``quick`` and ``paper`` with their files, and neither TensorFlow nor Keras imported."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import runpy, sys\n"
        f"sys.argv = ['{name}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('tfmedseg.experiments.{name}', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print('imported:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=repo)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("imported: []"), done.stdout[-500:]
    listed = dict(line.split() for line in done.stdout.split("configs (--config NAME")[1].split("\n\n")[0].splitlines()[1:])
    assert listed["quick"] == f"{name}_quick.yaml" and listed["paper"] == f"{name}.yaml", listed


def test_a_stopped_run_says_where_its_progress_is_and_exits_143(tmp_path, capsys):
    """SIGTERM (a scheduler's stop) while the experiment runs: one line naming the run directory and
    the rerun that resumes, exit 143 (128 + SIGTERM), no traceback, and the run is not marked complete."""
    import os
    import signal
    import time

    from tfmedseg.experiments.cli import RUN_COMPLETE, experiment_main

    def run(ctx):
        (ctx.output_dir / "liver").mkdir()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises KeyboardInterrupt long before

    out = tmp_path / "run"
    argv = ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    kwargs = dict(prog="tfmedseg.experiments.demo", description="demo", config_cls=Cfg, default_config=None,
                  phantom_dataset="lits", default_phantom_cases=3, prepare_phantoms=_fake_phantoms([]))
    def unhandled(signum, frame):  # without the wrapper's handler: fail this test, not the whole run
        raise RuntimeError("SIGTERM reached the previous handler")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert experiment_main(argv, run, **kwargs) == 143
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err
    assert err.endswith(f"interrupted (stopped by SIGTERM): progress is kept in {out} (each stage's backup/ checkpoints, "
                        "log.txt); rerun the same command to resume\n")
    assert "Traceback" not in err
    assert not (out / RUN_COMPLETE).exists()


def test_an_experiment_command_stopped_while_preparing_data_says_nothing_was_left(tmp_path, capsys, monkeypatch):
    """The real ``liver_ct_2d3d`` command, Ctrl-C during the phantom generation (before any training)."""
    import tfmedseg.datasets.phantoms as phantoms
    from tfmedseg.experiments import liver_ct_2d3d

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(phantoms, "ensure_phantoms", stop)
    code = liver_ct_2d3d.main(["--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 130
    assert capsys.readouterr().err.splitlines()[-1] == ("interrupted (stopped by Ctrl-C): stopped before training; nothing "
                                                        "partial was left: rerun the same command to start")
    assert not (tmp_path / "run").exists()  # the run folder made before the phantoms is not left behind, empty


def test_a_first_run_refused_by_its_data_leaves_no_run_folder(tmp_path, capsys):
    """A user error before any stage wrote (a wrong layout under --data-dir): one line, exit 2, and the run folder
    this command made (config.yaml, log.txt only) is gone; a folder with progress in it, or one that was there
    before, stays."""
    from tfmedseg.experiments.cli import experiment_main

    def refused(ctx):
        raise DatasetLayoutError("no LiTS volume-N.nii / segmentation-N.nii files found", path=ctx.data_dir)

    def refused_after_a_stage(ctx):
        (ctx.output_dir / "liver").mkdir()
        refused(ctx)

    kwargs = dict(prog="tfmedseg.experiments.demo", description="demo", config_cls=Cfg, default_config=None,
                  phantom_dataset="lits", default_phantom_cases=3)
    (tmp_path / "data").mkdir()
    out = tmp_path / "runs" / "demo"
    argv = ["--data-dir", str(tmp_path / "data"), "--output-dir", str(out)]
    assert experiment_main(argv, refused, **kwargs) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()
    assert experiment_main(argv, refused_after_a_stage, **kwargs) == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "liver", "log.txt"]  # progress: kept
    (out / "liver").rmdir()
    assert experiment_main(argv, refused, **kwargs) == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "log.txt"]  # there before this command: kept


def test_a_finished_run_with_other_settings_names_them_as_options(tmp_path):
    import json

    from tfmedseg.experiments.rundir import RUN_COMPLETE, finished

    key = {"config_hash": "abc", "seed": 0, "data": "phantoms:4"}
    (tmp_path / RUN_COMPLETE).write_text(json.dumps({**key, "completed": "then"}))
    assert finished(tmp_path, key)
    with pytest.raises(ConfigError) as info:
        finished(tmp_path, {**key, "config_hash": "def", "data": "phantoms:5"})
    assert str(info.value) == (f"{tmp_path}: holds a finished run with other settings (another config (--config / "
                               "--set), data (--data-dir / --phantom-cases)); choose a new --output-dir for a new run")


@pytest.mark.parametrize("override, key", [("tumour.train.optimizer=adamm", "tumour.train.optimizer"),
                                           ("tumour.order=sideways", "tumour.order"),
                                           ("liver.model=nosuchnet", "liver.model"),
                                           ("tumour.augmentation=foo", "tumour.augmentation"),
                                           ("liver.train.learning_rate=-1", "liver.train.learning_rate")])
def test_a_bad_stage_setting_is_refused_before_any_data_is_read(tmp_path, capsys, override, key):
    """Each stage checked its optimizer, loss, learning rate, network, sample order and augmentation only when it
    started: ``--set tumour.order=sideways`` (or a typo in any tumour.train name) failed after the liver stage had
    trained (12 epochs in the quick config, 100 in the paper's). Now: one line naming the dotted key before the
    data is read (here a --data-dir with no LiTS files, which would otherwise be the error) and no run folder."""
    from tfmedseg.experiments.liver_ct_2d3d import main

    (tmp_path / "data").mkdir()
    out = tmp_path / "run"
    assert main(["--data-dir", str(tmp_path / "data"), "--output-dir", str(out), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {key}: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_the_shipped_configs_pass_the_stage_checks():
    """Every config file in tfmedseg/configs passes :func:`check_stage_settings` (the check runs before every run)."""
    import importlib

    from tfmedseg.config import load_config
    from tfmedseg.experiments.arguments import available_configs
    from tfmedseg.training.stages import check_stage_settings

    checked = 0
    for name, cls in (("liver_ct_2d3d", "LiverCT2D3DConfig"), ("bone_malignet", "BoneMaligNetConfig"),
                      ("hecktor_petct", "HecktorConfig"), ("liver_lesion_fusion", "LiverLesionFusionConfig"),
                      ("maa_spect_liver", "MaaSpectConfig")):
        config_cls = getattr(importlib.import_module(f"tfmedseg.experiments.{name}"), cls)
        for path in available_configs(name).values():
            check_stage_settings(load_config(config_cls, path))
            checked += 1
    assert checked >= 20
