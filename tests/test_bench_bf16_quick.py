"""``benchmarks/bench_bf16_quick.py`` runs the seed-002 quick config with both stages trained in the asked precision.

The command line it builds is parsed by the experiment's own option parser (no training, no phantoms): the
resolved config has the precision on both stages and the quick config's networks, and the exports and
outputs go to the precision's own folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_bf16_quick  # noqa: E402

from tfmedseg.experiments import liver_ct_2d3d  # noqa: E402
from tfmedseg.experiments.cli import parse_experiment_args  # noqa: E402


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_command_trains_both_stages_in_the_precision(tmp_path, precision):
    command = bench_bf16_quick.experiment_command(precision, tmp_path / "work", tmp_path / "cache", 3, None)
    assert command[:3] == [sys.executable, "-m", bench_bf16_quick.EXPERIMENT]
    assert bench_bf16_quick.EXPERIMENT == liver_ct_2d3d.__name__
    data = tmp_path / "data"
    context = parse_experiment_args(
        command[3:], prog=liver_ct_2d3d.__name__, description="", config_cls=liver_ct_2d3d.LiverCT2D3DConfig,
        default_config="quick", phantom_dataset="lits", default_phantom_cases=16,
        prepare_phantoms=lambda dataset, out_dir, cases, seed: data)
    config = context.config
    assert config.liver.train.mixed_precision == precision
    assert config.tumour.train.mixed_precision == precision
    assert (config.liver.model, config.tumour.model) == ("mobilenetv2_2d", "mobilenetv2_2d")
    assert context.seed == 3
    assert context.output_dir == tmp_path / "work" / precision / "run"
    assert Path(config.export_dir) == tmp_path / "work" / precision / "saved_models"


def test_a_precision_named_again_runs_into_its_own_folder(tmp_path):
    labels = bench_bf16_quick.run_labels(["float32", "mixed_bfloat16", "float32", "float32"])
    assert labels == ["float32", "mixed_bfloat16", "float32-run2", "float32-run3"]
    command = bench_bf16_quick.experiment_command("float32", tmp_path, tmp_path / "cache", 0, None, labels[2])
    assert command[command.index("--output-dir") + 1] == str(tmp_path / "float32-run2" / "run")
    assert "liver.train.mixed_precision=float32" in command


def test_cascade_tumour_readings_split_tumour_free_cases(tmp_path):
    table = tmp_path / "per_case.csv"
    table.write_text("model,evaluation,case,tumour_dice,tumour_pred,tumour_ref\n"
                     "m,cascade,a,0.6,10,20\n"
                     "m,cascade,b,0.0,24,0\n"
                     "m,cascade,c,1.0,0,0\n"
                     "m,cascade,d,0.2,3,5\n"
                     "m,stage 2 (reference liver),a,0.9,10,20\n")
    mean_with_tumour, false_positives, tumour_free = bench_bf16_quick.cascade_tumour_readings(table)
    assert mean_with_tumour == pytest.approx(0.4)
    assert (false_positives, tumour_free) == (1, 2)


def test_dice_row_marks_only_differences_within_a_hundredth():
    row = bench_bf16_quick.dice_row("liver", [0.9454, 0.9470, 0.9300])
    assert row == "| liver | 0.9454 | 0.9470 | 0.9300 | +0.0016 (within 0.01) | -0.0154 |"
