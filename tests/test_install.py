"""``pip install .`` (not editable) from a copy of the repository, then the installed commands run
from another directory as a user runs them, with their output redirected to a file.

Slow (a wheel build and a tiny experiment run): ``python -m pytest -m slow tests/test_install.py``.
The new virtualenv sees the third-party packages of the environment running the tests through a
``.pth`` line (no downloads of TensorFlow); tfmedseg itself comes only from the wheel just built,
which the test checks (``tfmedseg.__file__`` lies in the new virtualenv).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: A tiny run (4-filter basic U-Net stages at 64 x 64, as the default run's liver test): what is tested is the
#: installed package, not the networks.
TINY = [
    "--phantom-cases", "4", "--set", "inplane_size=64", "--set", "validation_fraction=0.25",
    "--set", "liver.model=basic_unet", "--set", "tumour.model=basic_unet",
    "--set", "liver.variant=null", "--set", "tumour.variant=null",
    "--set", "liver.model_kwargs={base_filters: 4}", "--set", "tumour.model_kwargs={base_filters: 4}",
    "--set", "liver.steps_per_epoch=1", "--set", "tumour.steps_per_epoch=1",
    "--set", "liver.validation_steps=1", "--set", "tumour.validation_steps=1",
    "--set", "liver.train.epochs=2", "--set", "tumour.train.epochs=1",
    "--set", "liver.batch_size=2", "--set", "tumour.batch_size=2",
    "--set", "liver.train.image_every_epochs=0",
]

pytestmark = pytest.mark.slow


def _ignore(directory, names):
    return [n for n in names if n in {".git", ".ci-venv", "runs", "__pycache__", ".pytest_cache", "build", "dist"}
            or n.endswith(".egg-info")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, bin_dir, env)`` of a virtualenv with tfmedseg installed from a copy of the repository."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_ignore, symlinks=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # third-party packages (TensorFlow, ...) of the environment running the tests, after the venv's own
    Path(site, "_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TFMEDSEG_TF_LOGS", "TFMEDSEG_PROGRESS")}
    env["TFMEDSEG_CACHE"] = str(root / "cache")
    pip = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import tfmedseg; print(tfmedseg.__file__)"], capture_output=True,
                           text=True, env=env, cwd=root, timeout=300)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(Path(site)), where.stdout  # the wheel, not the checkout
    return python, venv / "bin", env, root


def test_configs_are_package_data_and_console_scripts_exist(installed):
    python, bin_dir, env, root = installed
    for script in ("tfmedseg", "tfmedseg-predict", "tfmedseg-export", "tfmedseg-phantoms"):
        assert (bin_dir / script).is_file(), script
    listing = subprocess.run([str(bin_dir / "tfmedseg"), "--help"], capture_output=True, text=True, env=env, cwd=root,
                             timeout=300)
    assert listing.returncode == 0 and "liver_ct_2d3d" in listing.stdout and "predict" in listing.stdout
    helped = subprocess.run([str(python), "-m", "tfmedseg.experiments.liver_ct_2d3d", "--help"], capture_output=True,
                            text=True, env=env, cwd=root, timeout=300)
    assert helped.returncode == 0, helped.stderr
    assert "liver_ct_2d3d_quick.yaml" in helped.stdout and "paper" in helped.stdout
    assert helped.stderr == ""  # no TensorFlow start-up noise (and no TensorFlow import) for --help


def test_installed_experiment_finds_its_config_and_logs_one_line_per_epoch(installed):
    python, bin_dir, env, root = installed
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    log = elsewhere / "run.log"
    with open(log, "w") as fh:
        proc = subprocess.run(
            [str(python), "-m", "tfmedseg.experiments.liver_ct_2d3d", "--config", "quick", *TINY,
             "--output-dir", "run", "--set", "export_dir=saved_models"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=elsewhere, timeout=1800,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x08" not in text  # no redrawn progress bars in a file
    epochs = re.findall(r"^\S+ INFO +epoch (\d+)/(\d+) \(.*val_dice", text, flags=re.M)
    assert epochs == [("1", "2"), ("2", "2"), ("1", "1")], text[-3000:]  # liver 2 epochs, tumour 1
    assert "absl::InitializeLog" not in text and "cudart_stub" not in text  # TensorFlow's CPU-only noise
    assert "Dice by lesion size" in text  # the final table
    assert "results in run/" in text and "  summary.md" in text and "exported saved_models/liver_ct_2d3d/1" in text
    assert (elsewhere / "run" / "log.txt").is_file()
    import tensorflow as tf

    tags = set()
    for f in (elsewhere / "run" / "liver" / "logs" / "validation").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_loss", "epoch_dice"} <= tags  # validation Dice per epoch in TensorBoard
