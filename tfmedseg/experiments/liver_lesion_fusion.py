"""Seed 003: liver then lesion segmentation, four DeepLabV3 networks per stage, learned decision fusion.

``python -m tfmedseg.experiments.liver_lesion_fusion [--config quick|paper|FILE] [--data-dir LiTS]``

Wiring on :mod:`tfmedseg.experiments.runner` (spec ``seed-003-liver-lesions.md``):

1. LiTS cases (or phantoms), 10 test volumes (121/10 on the 131 LiTS volumes, seeded);
2. cache per case: liver input (window [-250, 250] -> [-1, 1], 256^2) and target; the lesion VOI of the
   reference liver (square, CLAHE) and its lesion target;
3. liver stage: four networks (SGD 0.05, momentum 0.9, x0.95 every 10 epochs, 200 epochs, batch 32,
   BCE with logits); lesion stage: the same four warm-started from their liver network (SGD 0.1 halved
   every epoch, 20 epochs) on the reference-liver VOIs;
4. per stage, the fusion weights (BCE, SGD lr 10, momentum 0.9, init 0.25) on the training slices'
   post-processed masks (:mod:`tfmedseg.inference.fusion`, weighted majority);
5. test volumes through the two-stage pipeline (:mod:`tfmedseg.inference.liver_lesion`): Dice per
   volume at full resolution for every network (with / without post-processing) and the fusion;
   Tables 1 and 2, the fusion weights, the error-overlap matrices (Fig. 9);
6. export the bundle (eight networks + two fusion layers) for ``python -m tfmedseg.apps.liver_lesions``.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

import tfmedseg  # noqa: F401  (oneDNN on before TensorFlow loads)
from tfmedseg.experiments.cli import make_main
from tfmedseg.inference.liver_lesion import PipelineSettings
from tfmedseg.models.backbones import OS8_BACKBONES
from tfmedseg.training.config import TrainConfig

__all__ = ["FusionSettings", "LiverLesionFusionConfig", "NetworkStage", "main", "run"]


def _liver_train() -> TrainConfig:
    return TrainConfig(optimizer="sgd", learning_rate=0.05, optimizer_kwargs={"momentum": 0.9}, schedule="step",
                       schedule_kwargs={"factor": 0.95, "every_epochs": 10}, loss="bce_with_logits", epochs=200,
                       monitor="loss", image_every_epochs=0)


def _lesion_train() -> TrainConfig:
    return TrainConfig(optimizer="sgd", learning_rate=0.1, optimizer_kwargs={"momentum": 0.9}, schedule="step",
                       schedule_kwargs={"factor": 0.5, "every_epochs": 1}, loss="bce_with_logits", epochs=20,
                       monitor="loss", image_every_epochs=0)


@dataclasses.dataclass
class NetworkStage:
    """The four networks of one stage: backbones, ``size`` (``paper`` / ``small``), ImageNet or local
    ``weights`` (liver stage only; the lesion stage warm-starts), head width, ASPP rates, training."""

    backbones: tuple[str, ...] = OS8_BACKBONES
    size: str = "paper"
    weights: str | None = None
    head_channels: int = 256
    aspp_rates: tuple[int, ...] = (4, 8, 12)
    batch_size: int = 32
    steps_per_epoch: int | None = None
    train: TrainConfig = dataclasses.field(default_factory=_liver_train)


@dataclasses.dataclass
class FusionSettings:
    """Fusion training (seed: 5 epochs, SGD lr 10, momentum 0.9, init 0.25); at most ``max_slices``."""

    epochs: int = 5
    learning_rate: float = 10.0
    momentum: float = 0.9
    batch_size: int = 16
    initial_weight: float = 0.25
    max_slices: int = 5000


@dataclasses.dataclass
class LiverLesionFusionConfig:
    """Seed 003 settings (defaults: the paper on LiTS)."""

    dataset: str = "lits"
    max_cases: int = 0
    test_cases: int = 10
    pipeline: PipelineSettings = dataclasses.field(default_factory=PipelineSettings)
    liver: NetworkStage = dataclasses.field(default_factory=NetworkStage)
    lesion: NetworkStage = dataclasses.field(default_factory=lambda: NetworkStage(train=_lesion_train()))
    fusion: FusionSettings = dataclasses.field(default_factory=FusionSettings)
    export_name: str = "liver_lesion_fusion"
    export_dir: str = "saved_models"


def prepare(case, p: PipelineSettings) -> tuple[dict, tuple, dict]:
    """Cached arrays: ``image``/``liver`` (liver stage), ``voi``/``lesion`` (reference-liver VOI)."""
    from tfmedseg.preprocessing.liver_lesion import (
        lesion_input,
        lesion_target,
        liver_input,
        liver_target,
    )

    hu, label = case.images["ct"].array, case.label.array
    arrays = {"image": liver_input(hu, p.size, p.hu_window), "liver": liver_target(label, p.size)}
    if (label >= 1).any():
        arrays["voi"], crop = lesion_input(hu, label >= 1, p.size, p.hu_window, p.clahe, p.clip_limit)
        arrays["lesion"] = lesion_target(label, crop)
    return arrays, tuple(case.images["ct"].spacing), {}


def train_networks(name, stage: NetworkStage, train, val, ctx, p: PipelineSettings, warm=None) -> list:
    """Train the stage's four networks (runner.train_stage); ``warm``: liver networks to start from."""
    from tfmedseg.data.pipelines import slice2d_dataset
    from tfmedseg.experiments.runner import steps_for, train_stage
    from tfmedseg.models import registry

    nets = []
    for i, backbone in enumerate(stage.backbones):
        def build(i=i, backbone=backbone):
            net = registry.build(f"deeplabv3_{backbone}", input_shape=(p.size, p.size, 1), size=stage.size,
                                 weights=None if warm else stage.weights, head_channels=stage.head_channels,
                                 aspp_rates=stage.aspp_rates)
            if warm:
                net.set_weights(warm[i].get_weights())
            return net

        units = sum(c.depth for c in train)
        seed = ctx.seed + 10 * i + (5 if warm else 0)
        result = train_stage(f"{name}_{backbone}", stage.train, build,
                             slice2d_dataset(train, stage.batch_size, order="uniform", seed=seed),
                             slice2d_dataset(val, stage.batch_size, seed=seed + 1) if val else None,
                             output_dir=ctx.output_dir, seed=seed, units_per_step=stage.batch_size, unit="slice",
                             steps_per_epoch=steps_for(units, stage.batch_size, stage.steps_per_epoch),
                             validation_steps=max(1, sum(c.depth for c in val) // stage.batch_size) if val else None)
        nets.append(result.model)
    return nets


def fit_fusion(nets, images, targets, f: FusionSettings, p: PipelineSettings, post, seed: int):
    """Fusion layer trained on the networks' post-processed masks of the training slices."""
    from tfmedseg.inference.fusion import build_decision_fusion, train_decision_fusion
    from tfmedseg.inference.liver_lesion import keras_votes, network_masks

    index = [(c, s) for c, img in enumerate(images) for s in range(len(img))]
    keep = sorted(np.random.default_rng(seed).permutation(len(index))[: f.max_slices])
    x = np.stack([images[index[k][0]][index[k][1]] for k in keep])
    y = np.stack([targets[index[k][0]][index[k][1]] for k in keep])
    votes = post(network_masks(keras_votes(nets), x, p.batch_size), p)
    fusion = build_decision_fusion(len(nets), initial_weight=f.initial_weight)
    train_decision_fusion(fusion, votes, y, epochs=f.epochs, learning_rate=f.learning_rate,
                          momentum=f.momentum, batch_size=f.batch_size, seed=seed)
    return fusion


def evaluate(case, nets: dict, names, p: PipelineSettings):
    """One test volume: Dice per network (raw / post-processed liver, lesion) and of the fusion."""
    from tfmedseg.experiments.runner import CaseOutcome
    from tfmedseg.inference.liver_lesion import keras_votes, segment_liver_lesions
    from tfmedseg.metrics.overlap import compute_dice

    start = time.perf_counter()
    r = segment_liver_lesions(case.images["ct"].array, *(keras_votes(nets[k]) for k in ("liver", "lesion", "liver_fusion", "lesion_fusion")),
                              p, keep_models=True)
    seconds = time.perf_counter() - start
    label = case.label.array
    liver, lesion = label >= 1, label == 2
    row = {"case": case.case_id, "liver_fusion": compute_dice(r.liver, liver), "lesion_fusion": compute_dice(r.lesion, lesion)}
    for i, n in enumerate(names):
        row[f"liver_{n}_raw"] = compute_dice(r.liver_models_raw[i], liver)
        row[f"liver_{n}_post"] = compute_dice(r.liver_models_post[i], liver)
        row[f"lesion_{n}"] = compute_dice(r.lesion_models[i], lesion)
    errors = {"liver": (r.liver_models_post, liver), "lesion": (r.lesion_models, lesion)}
    return CaseOutcome(row, seconds=seconds, units=len(label), extra=errors)


def run(ctx) -> dict:
    """The experiment (module docstring); returns the summary (mean Dice per column)."""
    from tfmedseg.data.source import CaseArrays
    from tfmedseg.experiments import runner
    from tfmedseg.export.fusion_bundle import export_fusion_bundle
    from tfmedseg.inference.fusion import normalized_weights
    from tfmedseg.inference.liver_lesion import filter_lesions, filter_liver
    from tfmedseg.metrics.ensemble import (
        compute_error_overlap,
        format_ensemble_table,
        format_error_overlap,
        summarize_ensemble,
    )

    config: LiverLesionFusionConfig = ctx.config
    p, out = config.pipeline, ctx.output_dir
    cases = runner.load_cases(config.dataset, ctx.data_dir, config.max_cases)
    n_test = config.test_cases if len(cases) >= 2 * config.test_cases else max(1, round(0.3 * len(cases)))
    train_cases, test_cases = runner.seeded_split(cases, n_test / len(cases), ctx.seed)
    cache = runner.case_cache(ctx, "liver_lesion_fusion", dataclasses.asdict(p))
    arrays = runner.prepare_cases(train_cases + test_cases, cache, lambda c: prepare(c, p))
    def stage_arrays(group, image, target):
        return [CaseArrays(c.case_id, arrays[c.case_id][image], arrays[c.case_id][target]) for c in group if image in arrays[c.case_id]]

    stage_data = {"train": stage_arrays(train_cases, "image", "liver"), "test": stage_arrays(test_cases, "image", "liver")}
    voi_data = {"train": stage_arrays(train_cases, "voi", "lesion"), "test": stage_arrays(test_cases, "voi", "lesion")}
    names = list(config.liver.backbones)
    liver_nets = train_networks("liver", config.liver, stage_data["train"], stage_data["test"], ctx, p)
    lesion_nets = train_networks("lesion", config.lesion, voi_data["train"], voi_data["test"], ctx, p, warm=liver_nets)
    liver_fusion = fit_fusion(liver_nets, [c.image[..., 0] for c in stage_data["train"]], [c.label for c in stage_data["train"]],
                              config.fusion, p, filter_liver, ctx.seed)
    lesion_fusion = fit_fusion(lesion_nets, [c.image[..., 0] for c in voi_data["train"]], [c.label for c in voi_data["train"]],
                               config.fusion, p, filter_lesions, ctx.seed + 1)
    nets = {"liver": liver_nets, "lesion": lesion_nets, "liver_fusion": [liver_fusion], "lesion_fusion": [lesion_fusion]}
    ev = runner.evaluate_cases(test_cases, lambda c: evaluate(c, nets, names, p), what="test volume")
    keys = [k for k in ev.rows[0] if k != "case"]
    means = summarize_ensemble(ev.rows, keys)
    weights = {s: np.asarray(f.layers[-1].kernel.numpy())[:, 0] for s, f in (("liver", liver_fusion), ("lesion", lesion_fusion))}
    normalised = {"liver": normalized_weights(liver_fusion), "lesion": normalized_weights(lesion_fusion)}
    text = [format_ensemble_table(means, names, [("w/o post-processing", "liver_{name}_raw"), ("with post-processing", "liver_{name}_post")],
                                  "liver_fusion", f"Table 1: liver Dice per volume (%), {len(test_cases)} test volume(s)"),
            format_ensemble_table(means, names, [("lesion Dice", "lesion_{name}")], "lesion_fusion",
                                  "Table 2: lesion Dice per volume (%)"),
            "### Learned fusion weights (raw / normalised)\n\n| stage | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|\n"
            + "".join(f"| {s} | " + " | ".join(f"{w:.4f} / {v:.3f}" for w, v in zip(weights[s], normalised[s])) + " |\n" for s in weights)]
    for stage in ("liver", "lesion"):
        matrix = compute_error_overlap([o.extra[stage][0] for o in ev.outcomes], [o.extra[stage][1] for o in ev.outcomes])
        text.append(format_error_overlap(matrix, names, f"Error overlap (Dice of error maps, %), {stage} (Fig. 9)"))
    (out / "summary.md").write_text("\n".join(text))
    print("\n" + "\n".join(text))
    summary = {**means, "fusion_weights": {s: weights[s].tolist() for s in weights},
               "fusion_weights_normalised": {s: normalised[s].tolist() for s in normalised}}
    runner.write_summary_json(out, summary, rows=ev.rows)
    path = export_fusion_bundle(liver_nets, lesion_nets, liver_fusion, lesion_fusion,
                                runner.next_export_dir(config.export_dir, config.export_name), settings=p, networks=names,
                                fusion_weights=summary["fusion_weights"], metadata={"seed": "003", "experiment": "liver_lesion_fusion"})
    ctx.exported(path, f"the fusion bundle (python -m tfmedseg.apps.liver_lesions <dicom_folder> <out> --model {path})")
    return summary


main = make_main(run, config_cls=LiverLesionFusionConfig, phantom_dataset="lits", default_phantom_cases=10)

if __name__ == "__main__":
    sys.exit(main())
