"""Seed-003 experiment end to end: a tiny configuration in the default run, the quick one marked slow.

The tiny run trains one small backbone per stage (the full four-network wiring costs minutes of graph
building on 2 cores; the quick config, marked slow, trains all four).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfmedseg.experiments import liver_lesion_fusion
from tfmedseg.inference.liver_lesion import load_fusion_bundle

TINY = [
    "--phantom-cases", "3", "--set", "test_cases=1", "--set", "pipeline.size=32",
    "--set", "liver.backbones=[densenet201]", "--set", "lesion.backbones=[densenet201]",
    "--set", "liver.train.tensorboard=false", "--set", "lesion.train.tensorboard=false",
    "--set", "liver.head_channels=4", "--set", "lesion.head_channels=4",
    "--set", "liver.steps_per_epoch=1", "--set", "lesion.steps_per_epoch=1",
    "--set", "liver.batch_size=4", "--set", "lesion.batch_size=4",
    "--set", "liver.train.epochs=1", "--set", "lesion.train.epochs=1", "--set", "fusion.epochs=1",
    "--set", "fusion.max_slices=40",
]


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    argv = TINY + ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                   "--set", f"export_dir={tmp_path / 'saved_models'}"]
    assert liver_lesion_fusion.main(argv) == 0
    result = json.loads((out / "summary.json").read_text())
    summary = result["summary"]
    for key in ("liver_fusion", "lesion_fusion", "liver_densenet201_raw", "liver_densenet201_post", "lesion_densenet201"):
        assert 0.0 <= summary[key] <= 1.0
    assert len(summary["fusion_weights"]["liver"]) == 1 and len(result["rows"]) == 1
    assert np.isclose(sum(summary["fusion_weights_normalised"]["lesion"]), 1.0)
    text = (out / "summary.md").read_text()
    assert "Table 1" in text and "Table 2" in text and "Error overlap" in text and "Learned fusion weights" in text
    for stage in ("liver", "lesion"):
        assert (out / f"{stage}_densenet201" / "last.weights.h5").is_file()
    functions, settings, info = load_fusion_bundle(tmp_path / "saved_models" / "liver_lesion_fusion" / "1")
    assert settings.size == 32 and info["networks"] == ["densenet201"]
    votes = functions["liver_votes"](np.zeros((2, 32, 32, 1), np.float32))
    assert votes.shape == (2, 32, 32, 1)
    assert functions["liver_fuse"]((votes > 0).astype(np.float32)).shape == (2, 32, 32, 1)


@pytest.mark.slow
def test_quick_config_fusion_reaches_the_liver_dice(tmp_path):
    """The default command on the default phantoms (quick config; about 20 minutes on 2 cores)."""
    out = tmp_path / "run"
    assert liver_lesion_fusion.main(["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                                     "--set", f"export_dir={tmp_path / 'saved_models'}"]) == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    singles = [summary[f"liver_{b}_post"] for b in ("resnet152", "resnext101_32x8d", "densenet201", "inception_v3")]
    assert summary["liver_fusion"] >= 0.90
    assert summary["liver_fusion"] >= max(singles) - 0.01
    assert 0.0 <= summary["lesion_fusion"] <= 1.0
