"""Training subprocess for the resume (SIGKILL) and multi-worker tests.

Usage: python train_script.py OUTPUT_DIR [--hang-after-epoch N] [--strategy NAME] [--epochs E]

Trains a tiny 2D conv net (with Dropout, so the RNG state matters) on a fixed, unshuffled
dataset whose length is exactly one epoch, then writes ``result.npz`` (final weights,
optimizer step) into this process's output directory. With ``--hang-after-epoch N`` the run
writes ``OUTPUT_DIR/marker`` after epoch ``N`` (0-based) has been checkpointed, runs one batch
of the next epoch and then hangs, so that a test can kill it deterministically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tfmedseg  # noqa: F401  (oneDNN env before TensorFlow)
import keras
import numpy as np
import tensorflow as tf

from tfmedseg.training import TrainConfig, Trainer


class _Hang(keras.callbacks.Callback):
    def __init__(self, epoch: int, marker: Path):
        super().__init__()
        self.epoch, self.marker, self.armed = epoch, marker, False

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.marker.write_text(str(epoch))
            self.armed = True

    def on_train_batch_end(self, batch, logs=None):
        if self.armed:
            time.sleep(600)


def build():
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inp, keras.layers.Conv2D(1, 1)(x))


def run(output_dir, hang_after_epoch: int = -1, strategy: str = "default", epochs: int = 4, verbose=2) -> Path:
    """Train; return the path of ``result.npz``."""
    args = argparse.Namespace(output_dir=str(output_dir), hang_after_epoch=hang_after_epoch, strategy=strategy, epochs=epochs)
    steps = 2
    cfg = TrainConfig(
        optimizer="adam",
        learning_rate=1e-2,
        loss="bce_with_logits",
        epochs=args.epochs,
        steps_per_epoch=steps,
        schedule="step",
        schedule_kwargs={"factor": 0.5, "every_epochs": 1},
        strategy=args.strategy,
        output_dir=args.output_dir,
        tensorboard=False,
        seed=3,
        verbose=verbose,
    )
    out = Path(args.output_dir)
    extra = [_Hang(args.hang_after_epoch, out / "marker")] if args.hang_after_epoch >= 0 else []
    trainer = Trainer(cfg, build, callbacks=extra)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * steps, 8, 8, 1)).astype("float32")
    y = (x > 0.2).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    history = trainer.fit(ds)
    weights = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(trainer.model.trainable_variables)}
    result = trainer.output_dir / "result.npz"
    np.savez(
        result,
        iterations=int(trainer.model.optimizer.iterations.numpy()),
        losses=np.asarray(history.history.get("loss", []), "float64"),
        **weights,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--hang-after-epoch", type=int, default=-1)
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    from tfmedseg.logs import configure_logging

    configure_logging(verbose=0)  # the library's INFO lines (e.g. "resumed from ...") on stdout
    run(args.output_dir, args.hang_after_epoch, args.strategy, args.epochs)


if __name__ == "__main__":
    main()
