"""The stage runner on a tiny 2D segmentation task: train -> evaluate -> report -> export."""

from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from tfmedseg.data.geometry import SliceGeometry
from tfmedseg.data.source import CaseArrays
from tfmedseg.errors import ConfigError
from tfmedseg.experiments import runner
from tfmedseg.models import registry
from tfmedseg.reports import Column
from tfmedseg.training.trainer import TrainConfig


@registry.register("_runner_test_net")
def _tiny_net(input_shape, classes=2, filters=4):
    """Two convolutions, softmax: enough to learn a bright square."""
    inp = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, keras.layers.Conv2D(classes, 1, activation="softmax")(x))


def _cases(n=3, depth=4, size=16):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        label = np.zeros((depth, size, size), np.uint8)
        label[:, 4:12, 4:12] = 1
        out.append(CaseArrays(f"c{i}", label + 0.1 * rng.random((depth, size, size), np.float32), label))
    return out


def test_seeded_split_is_reproducible_and_keeps_training_cases():
    items = list(range(10))
    train, val = runner.seeded_split(items, 0.3, seed=4)
    assert (train, val) == runner.seeded_split(items, 0.3, seed=4)
    assert len(val) == 3 and sorted(train + val) == items
    assert [len(part) for part in runner.seeded_split([1, 2], 0.9, seed=0)] == [1, 1]
    with pytest.raises(ConfigError, match="none for training"):
        runner.seeded_split([1], 0.5, seed=0, keep_one=False)


def test_case_cache_sits_beside_phantoms_or_in_the_run(tmp_path):
    ctx = SimpleNamespace(data_dir=tmp_path / "phantoms" / "lits", output_dir=tmp_path / "run", used_phantoms=True)
    assert runner.case_cache(ctx, "exp", {"a": 1}).root == tmp_path / "phantoms" / ".lits-cache" / "exp"
    ctx.used_phantoms = False
    assert runner.case_cache(ctx, "exp", {"a": 1}).root == tmp_path / "run" / "cache" / "exp"


def test_segmentation_stage_evaluate_report_export(tmp_path):
    from tfmedseg.export.run_dir import load_for_export
    from tfmedseg.inference.spec import ServingSpec
    from tfmedseg.metrics.overlap import compute_dice

    geometry = SliceGeometry(rank=2, context_slices=3, output_slices=1)
    stage = runner.SegmentationStage(
        model="_runner_test_net", variant=None, model_kwargs={"filters": 4}, batch_size=2,
        steps_per_epoch=2, validation_steps=1,
        train=TrainConfig(loss="dice_ce", loss_kwargs={"from_logits": False}, epochs=2, verbose=0, tensorboard=False))
    cases = _cases()
    result = runner.segmentation_stage("seg", stage, geometry, cases[:2], cases[2:], output_dir=tmp_path, seed=3,
                                       inplane_size=16)
    assert result.timing["epochs"] == 2 and result.timing["steps"] == 4
    assert result.timing["train_seconds_per_slice"] > 0 and len(result.history["loss"]) == 2
    assert tuple(result.model.input_shape[1:]) == (16, 16, 3)
    assert (tmp_path / "seg" / "best.weights.h5").is_file()

    def evaluate_one(case):
        x, _ = next(iter(geometry.dataset([case], case.depth, epochs=1)))
        pred = np.argmax(np.asarray(result.model(x)), axis=-1)
        return runner.CaseOutcome({"model": "unet", "case": case.case_id,
                                   "dice": compute_dice(pred, case.label)}, seconds=0.5, units=case.depth)

    evaluation = runner.evaluate_cases(cases, evaluate_one)
    assert len(evaluation.rows) == 3 and evaluation.seconds_per_unit == pytest.approx(1.5 / 12)
    paths = runner.write_tables(tmp_path / "report", evaluation.rows, (Column("Model", "model", "first", "{}"),
                                Column("Dice", "dice")), title="t", sections=["### extra\n"], show=False)
    assert paths["summary"].read_text().rstrip().endswith("### extra")
    runner.write_summary_json(tmp_path, {"dice": 0.5}, timings={"seg": result.timing})
    assert json.loads((tmp_path / "summary.json").read_text())["summary"]["dice"] == 0.5

    spec = ServingSpec(input_size=(16, 16), **geometry.serving_fields())
    runner.export_stage(result.model, tmp_path / "export", spec, {"seed": "x"}, geometry.dataset(cases, 1, epochs=1),
                        max_batches=3)
    bundle = load_for_export(tmp_path / "export")
    assert bundle.representative.shape == (3, 16, 16, 3) and bundle.representative_labels.shape[0] == 3
    assert runner.next_export_dir(tmp_path / "sm", "m").name == "1"
