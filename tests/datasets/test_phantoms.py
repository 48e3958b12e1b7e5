"""Phantom generation: determinism per seed, ensure_phantoms reuse/atomicity, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfmedseg.datasets.phantoms as phantoms
from tfmedseg.datasets.phantoms import COMPLETE_MARKER, MANIFEST_NAME, ensure_phantoms, generate
from tfmedseg.datasets.phantoms.__main__ import main
from tfmedseg.errors import ConfigError, DatasetLayoutError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dataset", ["lits", "hecktor", "bone_scan"])
def test_same_seed_gives_identical_files(tmp_path, dataset):
    a = _files(generate(dataset, tmp_path / "a", cases=1, seed=5))
    b = _files(generate(dataset, tmp_path / "b", cases=1, seed=5))
    assert a.keys() == b.keys() and len(a) >= 2
    assert a == b


def test_other_seed_differs_and_case_is_independent_of_count(tmp_path):
    one = generate("lits", tmp_path / "one", cases=1, seed=1)
    two = generate("lits", tmp_path / "two", cases=2, seed=1)
    other = generate("lits", tmp_path / "other", cases=1, seed=2)
    name = "Training Batch 1/volume-0.nii"
    assert (one / name).read_bytes() == (two / name).read_bytes()
    assert (one / name).read_bytes() != (other / name).read_bytes()
    manifest = json.loads((two / MANIFEST_NAME).read_text())
    assert (manifest["dataset"], manifest["cases"], manifest["seed"]) == ("lits", 2, 1)


def test_ensure_phantoms_generates_once_then_reuses(tmp_path, monkeypatch):
    root = ensure_phantoms("bone_scan", tmp_path / "bs", 2, 0)
    assert (root / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bs"]  # no temporary leftovers
    before = _files(root)

    def boom(*args, **kwargs):
        raise AssertionError("should not regenerate")

    monkeypatch.setattr(phantoms, "_write_cases", boom)
    assert ensure_phantoms("bone_scan", root, 2, 0) == root
    assert _files(root) == before


def test_a_set_made_without_reuse_is_reused_by_reuse_and_ensure_phantoms(tmp_path, monkeypatch, capsys):
    """``phantoms`` without ``--reuse`` writes no marker, only the manifest (last, in a staging folder renamed
    when complete): ``--reuse`` and :func:`ensure_phantoms` accept that complete set as it is."""
    root = tmp_path / "bs"
    assert main(["bone_scan", str(root), "--cases", "2"]) == 0
    assert not (root / COMPLETE_MARKER).exists()
    before = _files(root)

    def boom(*args, **kwargs):
        raise AssertionError("should not regenerate")

    monkeypatch.setattr(phantoms, "_write_cases", boom)
    capsys.readouterr()
    assert main(["bone_scan", str(root), "--cases", "2", "--reuse"]) == 0
    assert capsys.readouterr().out.endswith("holds the bone_scan phantom set of these arguments already "
                                            "(phantom.json); nothing to do\n")
    assert ensure_phantoms("bone_scan", root, 2, 0) == root
    assert _files(root) == before
    with pytest.raises(DatasetLayoutError, match="no marker"):  # another seed: not this set, never replaced
        ensure_phantoms("bone_scan", root, 2, 1)
    assert _files(root) == before


def test_ensure_phantoms_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(dataset, out_dir, cases, seed):
        (Path(out_dir) / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(phantoms, "_write_cases", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_phantoms("lits", tmp_path / "lits", 1, 0)
    assert list(tmp_path.iterdir()) == []


def test_ensure_phantoms_refuses_foreign_directory(tmp_path):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "volume-0.nii").write_text("mine")
    with pytest.raises(DatasetLayoutError, match="no marker") as info:
        ensure_phantoms("lits", foreign, 1, 0)
    assert str(foreign) in str(info.value)
    assert (foreign / "volume-0.nii").read_text() == "mine"


def test_generate_checks_arguments(tmp_path):
    with pytest.raises(ConfigError, match="allowed"):
        generate("kits", tmp_path / "x")
    with pytest.raises(ConfigError, match="cases"):
        generate("lits", tmp_path / "x", cases=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(DatasetLayoutError) as info:
        generate("lits", tmp_path / "full", cases=1)
    assert "full" in str(info.value)


def test_cli_main_writes_layout(tmp_path, capsys):
    assert main(["hecktor", str(tmp_path / "h"), "--cases", "1", "--seed", "3"]) == 0
    assert (tmp_path / "h" / "CHGJ001" / "CHGJ001_pt.nii.gz").is_file()
    assert "wrote 1 hecktor" in capsys.readouterr().out
    assert main(["hecktor", str(tmp_path / "h"), "--cases", "1"]) == 2  # not empty (another seed)
    err = capsys.readouterr().err
    assert "not empty; remove it or choose another directory" in err and err.count("\n") == 1
    assert main(["hecktor", str(tmp_path / "h"), "--cases", "1", "--seed", "3"]) == 0  # the same command again: done
    assert capsys.readouterr().out.endswith("holds the hecktor phantom set of these arguments already (phantom.json); "
                                            "nothing to do\n")
    assert main(["bone_scan", str(tmp_path / "b"), "--cases", "1", "--reuse"]) == 0
    assert "wrote 1 bone_scan" in capsys.readouterr().out
    assert main(["bone_scan", str(tmp_path / "b"), "--cases", "1", "--reuse"]) == 0  # says so, does not claim to write
    assert capsys.readouterr().out.endswith("(phantom.json); nothing to do\n")


def test_cli_names_its_options_in_errors(tmp_path, capsys):
    assert main(["lits", str(tmp_path / "x"), "--cases", "0"]) == 2
    assert capsys.readouterr().err == "error: --cases: must be a positive integer, got 0\n"
    assert main(["lits", str(tmp_path / "x"), "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "error: --seed: must be a non-negative integer, got -1\n"
    assert not (tmp_path / "x").exists()


def test_cli_module_entry_point(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "tfmedseg.datasets.phantoms", "bone_scan", str(tmp_path / "bs"), "--cases", "2", "--seed", "1"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "bs").iterdir()) == ["BS0001", "BS0002", MANIFEST_NAME]
    bad = subprocess.run([sys.executable, "-m", "tfmedseg.datasets.phantoms", "nope", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.parametrize("stop, code, how", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM")])
def test_cli_stop_prints_one_line_exits_128_plus_signal_and_leaves_nothing(tmp_path, stop, code, how, stop_when_ready):
    """A real Ctrl-C (SIGINT) or ``kill`` (SIGTERM) in the middle of the generation: no traceback,
    exit 130 / 143 (the shells' 128 + signal), no half dataset."""

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "sets" / "bs"
    returncode, err = stop_when_ready(["tfmedseg.datasets.phantoms", "bone_scan", str(out), "--cases", "500"],
                                      # the first case is being written
                                      lambda: any((tmp_path / "sets").glob("bs.tfmedseg-partial-*/BS0001")), stop, env=env)
    assert returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"interrupted (stopped by {how}): nothing partial was left (outputs appear "
                                            "only when complete); rerun the same command to start again")
    assert list(tmp_path.iterdir()) == []  # no staging, and the parent folder the run created is gone too


def test_experiment_cli_uses_ensure_phantoms(tmp_path):
    from tfmedseg.experiments.cli import parse_experiment_args
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        lr: float = 0.1

    ctx = parse_experiment_args(
        ["--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out"), "--seed", "2"],
        prog="tfmedseg.experiments.demo", description="demo", config_cls=Cfg, default_config=None,
        phantom_dataset="bone_scan", default_phantom_cases=2,
    )
    assert ctx.used_phantoms and ctx.data_dir == tmp_path / "cache" / "phantoms" / "bone_scan-n2-s2"
    assert (ctx.data_dir / COMPLETE_MARKER).is_file()
    from tfmedseg.datasets import load_dataset

    assert len(load_dataset("bone_scan", ctx.data_dir)) == 2
    assert np.isfinite(load_dataset("bone_scan", ctx.data_dir)[0].images["anterior"].array).all()
