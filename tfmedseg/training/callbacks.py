"""Training callbacks: resumable checkpoints, best/last weights, plateau LR, SWA, image summaries.

Callbacks with state that must survive a restart implement ``get_resume_state() -> dict`` and
``set_resume_state(dict)``; :class:`ResumeCheckpoint` saves those states with the weights at
every epoch end and gives them back at the start of the next ``fit``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfmedseg.command import raise_pending_stop
from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.io._atomic import OUTPUT_MARKER, atomic_dir, atomic_file, clean_stale_staging, has_marker
from tfmedseg.training.schedules import ScaledSchedule

_log = logging.getLogger(__name__)

__all__ = [
    "ResumeCheckpoint",
    "HistoryCSVLogger",
    "trim_history",
    "BestLastCheckpoint",
    "PendingStop",
    "LearningRateLogger",
    "ReduceLROnPlateau",
    "ResumableEarlyStopping",
    "StochasticWeightAveraging",
    "ImageSummary",
    "overlay_panels",
    "recompute_batchnorm_statistics",
    "save_weights_without_optimizer",
    "load_weights_without_optimizer",
]



def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, path.suffix) as tmp:
        Path(tmp).write_bytes(data)


def save_weights_without_optimizer(model, path) -> None:
    """``model.save_weights`` without the optimizer's variables (best / last weights: a third of
    the size with Adam; only the resume checkpoint needs the optimizer state)."""
    from keras.src.saving import saving_lib

    skip = [model.optimizer] if getattr(model, "optimizer", None) is not None else None
    saving_lib.save_weights_only(model, str(path), objects_to_skip=skip)


def load_weights_without_optimizer(model, path) -> None:
    """Load weights :func:`save_weights_without_optimizer` wrote, skipping the optimizer as it did
    (``model.load_weights`` would warn once per optimizer that the file holds none of its variables)."""
    from keras.src.saving import saving_lib

    skip = [model.optimizer] if getattr(model, "optimizer", None) is not None else None
    saving_lib.load_weights_only(model, str(path), objects_to_skip=skip)


def _seed_generator_states(model) -> list:
    return [v for v in model.variables if "seed_generator_state" in v.path]


# ------------------------------------------------------------------------------------------
# Resume state as JSON + npz (plain data only: a crafted checkpoint must not run code)
# ------------------------------------------------------------------------------------------


def _encode_state(obj, arrays: dict):
    """JSON-able form of ``obj``; arrays go to ``arrays`` (saved as npz) and are referenced by key."""
    if isinstance(obj, (np.ndarray, tf.Tensor, tf.Variable)) or hasattr(obj, "numpy") and not isinstance(obj, (int, float)):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(obj)
        return {"__array__": key}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        return {"__dict__": [[_encode_state(k, arrays), _encode_state(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode_state(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode_state(v, arrays) for v in obj]
    raise TypeError(f"cannot store a {type(obj).__name__} in a resume checkpoint")


def _decode_state(obj, arrays: dict, where: Path):
    """Inverse of :func:`_encode_state`; any unexpected structure is an error naming ``where``."""
    if isinstance(obj, list):
        return [_decode_state(v, arrays, where) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in arrays:
                raise InvalidInputError(f"refers to array {key!r} missing from state.npz", path=where)
            return arrays[key]
        if set(obj) == {"__float__"} and obj["__float__"] in ("nan", "inf", "-inf"):
            return float(obj["__float__"])
        if set(obj) == {"__tuple__"} and isinstance(obj["__tuple__"], list):
            return tuple(_decode_state(v, arrays, where) for v in obj["__tuple__"])
        if set(obj) == {"__dict__"} and isinstance(obj["__dict__"], list):
            out = {}
            for item in obj["__dict__"]:
                if not (isinstance(item, list) and len(item) == 2):
                    raise InvalidInputError("malformed dictionary entry", path=where)
                out[_decode_state(item[0], arrays, where)] = _decode_state(item[1], arrays, where)
            return out
        raise InvalidInputError(f"unexpected object with keys {sorted(obj)[:5]}", path=where)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise InvalidInputError(f"unexpected value of type {type(obj).__name__}", path=where)


def _numpy_rng_state(state) -> tuple:
    name, keys, pos, has_gauss, cached = state
    keys = np.asarray(keys)
    if name != "MT19937" or keys.shape != (624,) or keys.dtype.kind not in "iu":
        raise InvalidInputError("numpy RNG state is malformed", path="state.json")
    return (str(name), keys.astype(np.uint32), int(pos), int(has_gauss), float(cached))


def _python_rng_state(state) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(v) for v in internal), None if gauss is None else float(gauss))


class ResumeCheckpoint(keras.callbacks.Callback):
    """Save the full training state at every epoch end; restore it when ``fit`` starts again.

    Like ``keras.callbacks.BackupAndRestore`` (model weights with optimizer state, hence the
    schedule position ``optimizer.iterations``, and the epoch number), plus: the Keras
    ``SeedGenerator`` states (dropout / augmentation RNG), the numpy and Python global RNG states,
    and the states of the other callbacks of the run (best value, plateau factor, SWA average).
    A checkpoint is written to a fresh directory ``ckpt-<epoch>`` (``model.weights.h5``,
    ``state.json`` and ``state.npz``: plain data, so a crafted checkpoint cannot run code; and our
    output marker), staged as ``ckpt-<epoch>.tfmedseg-partial-<host>-<pid>-<random>`` by
    :func:`tfmedseg.io._atomic.atomic_dir` like every output (a killed run's staging is removed
    when training starts again; a ``ckpt-<epoch>`` folder holding files we did not write is never
    replaced or removed), and then made current by atomically replacing ``latest.json``, so a process killed at any moment
    (SIGKILL) leaves the last complete epoch loadable. An unreadable ``latest.json`` or a missing /
    damaged checkpoint falls back to the newest complete ``ckpt-*``; when none is left the error
    names the file. The checkpoint is kept after training, so re-running a finished run trains no
    further epochs.

    Put it after the callbacks whose state it saves (the trainer does).

    Args:
        backup_dir: Directory of the checkpoints (created).
        callbacks: Other callbacks whose ``get_resume_state`` / ``set_resume_state`` to save.
        keep: Number of checkpoints kept (default 1).
    """

    def __init__(self, backup_dir, callbacks=(), keep: int = 1):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.stateful = [c for c in callbacks if hasattr(c, "get_resume_state")]
        self.keep = max(1, int(keep))
        self.restored_epoch = 0

    @property
    def _latest(self) -> Path:
        return self.backup_dir / "latest.json"

    def _candidates(self) -> list[str]:
        """Checkpoint directory names to try, newest first (``latest.json``'s first when readable)."""
        order: list[str] = []
        if self._latest.exists():
            try:
                info = json.loads(self._latest.read_text())
                name = info["dir"]
                if not (isinstance(name, str) and name.startswith("ckpt-") and name[5:].isdigit()):  # no path, no staging
                    raise ValueError(f"bad checkpoint name {name!r}")
                if (self.backup_dir / name).is_dir():
                    order.append(name)
                else:
                    _log.warning("%s names %s, which is missing; resuming from the newest complete checkpoint", self._latest, name)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                _log.warning("%s is unreadable (%s); resuming from the newest complete checkpoint", self._latest, exc)
        return order + [d for d in self._checkpoint_dirs()[::-1] if d not in order]

    def _checkpoint_dirs(self) -> list[str]:
        """The complete checkpoint folders ``ckpt-<epoch>``, oldest first (staging names excluded)."""
        return sorted(p.name for p in self.backup_dir.glob("ckpt-*") if p.is_dir() and p.name[5:].isdigit())

    def on_train_begin(self, logs=None):
        if not self.backup_dir.is_dir():
            return
        clean_stale_staging(self.backup_dir)  # staging of a killed run (SIGKILL)
        for stale in self.backup_dir.glob(".ckpt-*.tmp"):  # and the hidden staging of tfmedseg before 2026-12-07
            shutil.rmtree(stale, ignore_errors=True)
        candidates = self._candidates()
        if not candidates:
            if self._latest.exists():
                raise InvalidInputError(
                    f"names a checkpoint that is missing and no other complete checkpoint is left in {self.backup_dir}; "
                    "remove the backup folder to train from scratch",
                    path=self._latest,
                )
            return
        model = self.model
        if not model.built and getattr(getattr(model, "network", None), "built", False):
            model.build(model.network.input_shape)  # AugmentedModel: the wrapper has no weights of its own
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        problems = []
        for name in candidates:
            try:
                self._restore(self.backup_dir / name)
                return
            except InvalidInputError as exc:
                problems.append(f"{Path(exc.path or name).name}: {exc.reason}")
                _log.warning("cannot resume from %s (%s); trying an older checkpoint", self.backup_dir / name, exc)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                _log.warning("cannot resume from %s (%s); trying an older checkpoint", self.backup_dir / name, exc)
        raise InvalidInputError(
            f"no complete checkpoint to resume from ({'; '.join(problems)[:300]}); remove the backup folder to train from scratch",
            path=self.backup_dir / candidates[0] / "state.json",
        )

    def _restore(self, ckpt: Path) -> None:
        from tfmedseg.io.npz import load_npz

        if not ckpt.is_dir():
            raise InvalidInputError("checkpoint folder is missing", path=ckpt)
        state_path = ckpt / "state.json"
        try:
            doc = json.loads(state_path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"not valid JSON ({exc})", path=state_path) from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("epoch"), int) or doc["epoch"] < 1:
            raise InvalidInputError("no valid 'epoch'", path=state_path)
        arrays = load_npz(ckpt / "state.npz")
        state = _decode_state(doc.get("state"), arrays, state_path)
        if not isinstance(state, dict) or not {"seed_generators", "numpy_rng", "python_rng", "callbacks"} <= set(state):
            raise InvalidInputError("resume state is incomplete", path=state_path)
        numpy_rng = _numpy_rng_state(state["numpy_rng"])
        python_rng = _python_rng_state(state["python_rng"])
        weights = ckpt / "model.weights.h5"
        if not weights.is_file():
            raise InvalidInputError("checkpoint has no model.weights.h5", path=ckpt)
        model = self.model
        model.load_weights(weights)
        for var, value in zip(_seed_generator_states(model), state["seed_generators"]):
            var.assign(value)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)
        for cb, cb_state in zip(self.stateful, state["callbacks"]):
            if cb_state is not None:
                cb.set_resume_state(cb_state)
        self.restored_epoch = int(doc["epoch"])
        model._initial_epoch = self.restored_epoch
        _log.info("resumed from %s after epoch %d (optimizer step %d)", ckpt, self.restored_epoch,
                  int(model.optimizer.iterations.numpy()))

    def on_epoch_end(self, epoch, logs=None):
        from tfmedseg.io.npz import save_npz

        name = f"ckpt-{epoch + 1:06d}"
        # staged as ckpt-<epoch>.tfmedseg-partial-<host>-<pid>-<random> and renamed when complete; an
        # interrupted (SIGTERM / Ctrl-C) or failed write leaves no half-written checkpoint; an older
        # ckpt-<epoch> (a resume from an earlier epoch redoes it) is replaced only when it is ours
        with atomic_dir(self.backup_dir / name, overwrite=True, kind="checkpoint", ours=_is_checkpoint_folder) as tmp:
            self.model.save_weights(tmp / "model.weights.h5")
            state = {
                "seed_generators": [np.asarray(v.numpy()) for v in _seed_generator_states(self.model)],
                "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(),
                "callbacks": [cb.get_resume_state() for cb in self.stateful],
            }
            arrays: dict = {}
            doc = {"epoch": epoch + 1, "state": _encode_state(state, arrays)}
            save_npz(tmp / "state.npz", arrays, compress=False)
            (tmp / "state.json").write_text(json.dumps(doc))
        _atomic_write_bytes(self._latest, json.dumps({"epoch": epoch + 1, "dir": name}).encode())
        old = [d for d in self._checkpoint_dirs() if d != name]
        for d in old[: max(0, len(old) - (self.keep - 1))]:
            if _is_checkpoint_folder(self.backup_dir / d):
                shutil.rmtree(self.backup_dir / d, ignore_errors=True)
            else:
                _log.warning("left %s in place: it holds files tfmedseg did not write", self.backup_dir / d)


#: The files of a resume checkpoint folder (:meth:`ResumeCheckpoint.on_epoch_end`).
_CHECKPOINT_FILES = frozenset({"model.weights.h5", "state.json", "state.npz", OUTPUT_MARKER})


def _is_checkpoint_folder(path: Path) -> bool:
    """True for a checkpoint folder we wrote: it carries our marker, or (written before checkpoints
    carried it) holds nothing but checkpoint files."""
    if has_marker(path):
        return True
    try:
        entries = list(path.iterdir())
    except OSError:
        return False
    return all(e.name in _CHECKPOINT_FILES and e.is_file() and not e.is_symlink() for e in entries)


def trim_history(path: Path, first_epoch: int, separator: str = ",") -> int:
    """Drop the rows of epoch ``first_epoch`` and later from a ``CSVLogger`` file (atomically).

    Such rows were logged by a run that ended after them but before their resume checkpoint (killed
    between the two, or resumed from an older checkpoint because the newest was damaged); the
    resumed run redoes those epochs. An incomplete last line (killed mid-write) is dropped too; with
    ``first_epoch == 0`` the file is emptied (header included: the new run writes its own).

    Returns:
        The number of lines removed.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the training history: {exc}", path=path) from exc
    if not lines:
        return 0

    def kept(line: str) -> bool:
        epoch = line.split(separator, 1)[0].strip()
        return line.endswith("\n") and epoch.isdigit() and int(epoch) < first_epoch

    keep = [] if first_epoch <= 0 else lines[:1] + [line for line in lines[1:] if kept(line)]
    if len(keep) == len(lines):
        return 0
    with atomic_file(path, path.suffix) as tmp:
        Path(tmp).write_text("".join(keep))
    _log.info("%s: removed %d row(s) of epochs >= %d (redone after resuming)", path, len(lines) - len(keep), first_epoch)
    return len(lines) - len(keep)


class HistoryCSVLogger(keras.callbacks.CSVLogger):
    """``keras.callbacks.CSVLogger(append=True)`` keeping one row per epoch across resumed runs.

    The file is opened when the first epoch of a ``fit`` begins, after :class:`ResumeCheckpoint`
    has set the epoch to resume from, and rows of that epoch and later ones are removed first
    (:func:`trim_history`), so redone epochs replace their earlier rows instead of following them.
    """

    def __init__(self, filename, separator: str = ","):
        super().__init__(str(filename), separator=separator, append=True)
        self._opened = False

    def on_train_begin(self, logs=None):
        self._opened = False  # opened at the first epoch: the resumed epoch is not known yet

    def on_epoch_begin(self, epoch, logs=None):
        if not self._opened:
            trim_history(Path(self.filename), epoch, self.sep)
            super().on_train_begin(logs)
            self._opened = True


class PendingStop(keras.callbacks.Callback):
    """Before each training / validation / prediction step, raise a Ctrl-C / SIGTERM whose
    ``KeyboardInterrupt`` was dropped on the way (C code running the signal handler replaced it;
    :func:`tfmedseg.command.raise_pending_stop`), so that the stop still ends ``fit`` at the next
    step instead of after the last epoch. A no-op without a pending stop."""

    def on_train_batch_begin(self, batch, logs=None):
        raise_pending_stop()

    def on_test_batch_begin(self, batch, logs=None):
        raise_pending_stop()

    def on_predict_batch_begin(self, batch, logs=None):
        raise_pending_stop()


class LearningRateLogger(keras.callbacks.Callback):
    """Add the optimizer's current learning rate to the epoch logs as ``"learning_rate"``.

    Put it first, so that the CSV log, TensorBoard and the history all see it.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.model.optimizer is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class BestLastCheckpoint(keras.callbacks.Callback):
    """Write ``last.weights.h5`` every epoch and ``best.weights.h5`` when ``monitor`` improves.

    Files are replaced atomically; ``best.json`` records the epoch (1-based) and value. The best
    value survives a resume (``get_resume_state``).

    Args:
        directory: Output directory.
        monitor: Log key to watch (default ``"val_loss"``; falls back to ``"loss"`` when absent).
        mode: ``"min"`` or ``"max"``.
    """

    def __init__(self, directory, monitor: str = "val_loss", mode: str = "min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ConfigError(f"must be 'min' or 'max', got {mode!r}", path="monitor_mode")
        self.directory = Path(directory)
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def _save(self, name: str) -> None:
        with atomic_file(self.directory / name, ".weights.h5") as tmp:
            save_weights_without_optimizer(self.model, tmp)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.directory.mkdir(parents=True, exist_ok=True)
        self._save("last.weights.h5")
        value = logs.get(self.monitor, logs.get("loss"))
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better and np.isfinite(value):
            self.best = value
            self._save("best.weights.h5")
            _atomic_write_bytes(self.directory / "best.json", json.dumps({"epoch": epoch + 1, self.monitor: value}).encode())

    def get_resume_state(self):
        return {"best": self.best}

    def set_resume_state(self, state):
        self.best = state["best"]


def _scaled_schedule(optimizer):
    opt = getattr(optimizer, "inner_optimizer", optimizer)
    while hasattr(opt, "inner_optimizer"):
        opt = opt.inner_optimizer
    lr = getattr(opt, "_learning_rate", None)
    return lr if isinstance(lr, ScaledSchedule) else None


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """``keras.callbacks.ReduceLROnPlateau`` that also works with learning-rate schedules.

    With a float rate it behaves exactly like Keras's. When the optimizer's rate is a
    :class:`~tfmedseg.training.schedules.ScaledSchedule` it multiplies the schedule's ``factor``
    instead (Keras raises ``TypeError`` when setting the rate of a schedule), so the reduction
    composes with warm-up, cosine restarts or step decay. ``min_lr`` bounds the *current* rate.
    Wait / cooldown / best survive a resume.
    """

    def _reduce_optimizer_lr(self, optimizer, epoch, name=""):
        scaled = _scaled_schedule(optimizer)
        if scaled is None:
            verbose, self.verbose = self.verbose, 0  # Keras would print its line to stdout: logged below
            try:
                reduced = super()._reduce_optimizer_lr(optimizer, epoch, name)
            finally:
                self.verbose = verbose
            if reduced and verbose > 0:
                _log.info("epoch %d: ReduceLROnPlateau reducing the learning rate to %.3g", epoch + 1,
                          float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
            return reduced
        old_lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        if old_lr <= np.float32(self.min_lr):
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        scaled.factor.assign(float(scaled.factor.numpy()) * new_lr / old_lr)
        if self.verbose > 0:
            _log.info("epoch %d: ReduceLROnPlateau scaling the schedule: learning rate %.3g", epoch + 1, new_lr)
        return True

    def get_resume_state(self):
        scaled = _scaled_schedule(self.model.optimizer)
        return {
            "best": self.best,
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
            "factor": None if scaled is None else float(scaled.factor.numpy()),
            "lr": None if scaled is not None else float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        }

    def set_resume_state(self, state):
        self.best, self.wait, self.cooldown_counter = state["best"], state["wait"], state["cooldown_counter"]
        scaled = _scaled_schedule(self.model.optimizer)
        if scaled is not None and state["factor"] is not None:
            scaled.factor.assign(state["factor"])
        elif scaled is None and state["lr"] is not None:
            self.model.optimizer.learning_rate = state["lr"]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` whose wait count, best value and best weights survive a resume;
    with ``verbose`` it logs (``logging``) instead of printing Keras' lines to stdout."""

    def on_train_end(self, logs=None):
        verbose, self.verbose = self.verbose, 0  # Keras would print its two lines
        try:
            super().on_train_end(logs)
        finally:
            self.verbose = verbose
        if verbose and self.stopped_epoch > 0:
            _log.info("epoch %d: early stopping (no %s improvement for %d epochs)", self.stopped_epoch + 1, self.monitor,
                      self.patience)
        if verbose and self.restore_best_weights and self.best_weights is not None:
            _log.info("restored the weights of the best epoch (%d, %s %.4g)", self.best_epoch + 1, self.monitor, self.best)

    def get_resume_state(self):
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch, "best_weights": self.best_weights}

    def set_resume_state(self, state):
        self.wait, self.best, self.best_epoch, self.best_weights = (
            state["wait"],
            state["best"],
            state["best_epoch"],
            state["best_weights"],
        )


def _batchnorm_layers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batchnorm_statistics(model, data, steps: int | None = None) -> int:
    """Recompute BatchNorm moving statistics as exact averages over ``data`` (SWA's ``bn_update``).

    Moving means / variances are reset, then each batch is run in training mode with the layer
    momentum set to ``i / (i + 1)`` for batch ``i`` (0-based), which makes the moving value the
    cumulative mean of the batch statistics (``torch.optim.swa_utils.update_bn``).

    Args:
        model: The Keras model.
        data: Iterable of ``x`` or ``(x, y[, w])`` batches (a ``tf.data.Dataset``).
        steps: Number of batches to use (default: all; required for an infinite dataset).

    Returns:
        The number of batches used (0 when the model has no BatchNormalization).
    """
    bns = _batchnorm_layers(model)
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
        bn.moving_variance.assign(np.ones(bn.moving_variance.shape, "float32"))
    n = 0
    try:
        for batch in data:
            if steps is not None and n >= steps:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for bn in bns:
                bn.momentum = n / (n + 1.0)
            model(x, training=True)
            n += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    return n


class StochasticWeightAveraging(keras.callbacks.Callback):
    """Stochastic weight averaging (Izmailov et al. 2018) from ``start_epoch`` on.

    At the end of every epoch ``>= start_epoch`` (0-based) the trainable weights are added to a
    running mean; at the end of training the mean is swapped in and, when ``bn_data`` is given, the
    BatchNorm statistics are recomputed by a pass over it (the averaged weights change the
    activations, so the running statistics collected during training no longer fit). The averaged
    weights are saved to ``path`` when given. With ``replace=False`` the model then gets back the
    weights it had before (e.g. the best-validation weights that early stopping restored just
    before): SWA is a separate candidate, never silently the selected weights.

    Args:
        start_epoch: First epoch (0-based) included in the average.
        bn_data: Training batches for the BatchNorm pass (``x`` or ``(x, y)``), or None.
        bn_steps: Batches of ``bn_data`` to use (required for an infinite dataset).
        verbose: Print when the average is swapped in.
        path: Optional ``*.weights.h5`` file for the averaged weights (``swa.weights.h5``).
        replace: Keep the averaged weights in the model at the end (True) or restore the model's
            weights after saving them (False).
    """

    def __init__(self, start_epoch: int, bn_data=None, bn_steps: int | None = None, verbose: int = 1,
                 path=None, replace: bool = True):
        super().__init__()
        if start_epoch < 0:
            raise ConfigError(f"must be >= 0, got {start_epoch}", path="swa_start_epoch")
        if not replace and path is None:
            raise ConfigError("SWA that does not replace the weights needs a file to save the average to", path="swa_replace")
        self.start_epoch = int(start_epoch)
        self.bn_data = bn_data
        self.bn_steps = bn_steps
        self.verbose = verbose
        self.path = None if path is None else Path(path)
        self.replace = bool(replace)
        self.n_averaged = 0
        self.average = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        weights = [np.asarray(v.numpy(), dtype="float64") for v in self.model.trainable_variables]
        if self.average is None:
            self.average = weights
        else:
            k = self.n_averaged + 1.0
            self.average = [a + (w - a) / k for a, w in zip(self.average, weights)]
        self.n_averaged += 1

    def on_train_end(self, logs=None):
        if not self.n_averaged:
            return
        kept = None if self.replace else self.model.get_weights()
        for v, a in zip(self.model.trainable_variables, self.average):
            v.assign(a.astype(v.dtype))
        used = recompute_batchnorm_statistics(self.model, self.bn_data, self.bn_steps) if self.bn_data is not None else 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.path, ".weights.h5") as tmp:
                save_weights_without_optimizer(self.model, tmp)
        if kept is not None:
            self.model.set_weights(kept)
        if self.verbose:
            _log.info("SWA: averaged %d epochs' weights; BatchNorm statistics from %d batches%s%s", self.n_averaged, used,
                      f"; saved to {self.path}" if self.path is not None else "",
                      "" if self.replace else " (a candidate: the model keeps its selected weights)")

    def get_resume_state(self):
        return {"n_averaged": self.n_averaged, "average": self.average}

    def set_resume_state(self, state):
        self.n_averaged, self.average = state["n_averaged"], state["average"]


_PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 128, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255]], "float32")


def _label_map(arr: np.ndarray, from_logits: bool, image_ndim: int) -> np.ndarray:
    """Integer class map ``[B, *spatial]`` from one-hot / probability / logit / integer arrays.

    ``arr`` has a channel axis when it has as many axes as the image (``image_ndim``).
    """
    arr = np.asarray(arr)
    if arr.ndim < image_ndim:  # integer labels without a channel axis
        return arr.astype(np.int64)
    if arr.shape[-1] > 1:
        return np.argmax(arr, axis=-1)
    arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    return (arr > (0.0 if from_logits else 0.5)).astype(np.int64)


def overlay_panels(image, label, prediction, num_slices: int = 3, from_logits: bool = True, alpha: float = 0.45) -> np.ndarray:
    """RGB panels ``[input | label overlay | prediction overlay]`` for TensorBoard.

    Args:
        image: ``[B, H, W, C]`` or ``[B, D, H, W, C]`` input; channel 0 is shown, min-max scaled per
            sample.
        label: Same spatial shape (or, for 3D slabs, the middle ``D'`` slices): one-hot ``[..., K]``,
            binary ``[..., 1]`` or integer ``[...]``.
        prediction: Model output, ``[..., K]`` (argmax) or ``[..., 1]`` (thresholded at 0 for
            logits, 0.5 for probabilities).
        num_slices: For 3D, the number of axial slices (evenly spaced along ``D``) per sample.
        from_logits: Whether a 1-channel prediction is a logit.
        alpha: Opacity of the class colours (class 1 red, 2 green, 3 blue...).

    Returns:
        uint8 ``[N, H, 3 W, 3]`` with ``N = B`` (2D) or ``B * num_slices`` (3D).
    """
    image = np.asarray(image, "float32")
    lab = _label_map(label, False, image.ndim)
    pred = _label_map(prediction, from_logits, image.ndim)
    gray = image[..., 0]
    if gray.ndim == 4 and lab.size < gray.size:
        # 3D slabs (seed 002: 8 input slices, labels for the middle 4): show the labelled slices.
        depth = lab.size // (gray.shape[0] * gray.shape[2] * gray.shape[3])
        start = (gray.shape[1] - depth) // 2
        gray = gray[:, start : start + depth]
    if gray.ndim == 4:  # 3D: pick slices along D
        d = gray.shape[1]
        idx = np.unique(np.linspace(0, d - 1, num_slices + 2)[1:-1].round().astype(int)) if d > 2 else np.arange(d)
        gray, lab, pred = (a[:, idx].reshape((-1,) + a.shape[2:]) for a in (gray, lab.reshape(gray.shape), pred.reshape(gray.shape)))
    lab = lab.reshape(gray.shape)
    pred = pred.reshape(gray.shape)
    lo = gray.reshape(len(gray), -1).min(axis=1)[:, None, None]
    hi = gray.reshape(len(gray), -1).max(axis=1)[:, None, None]
    g = (gray - lo) / np.maximum(hi - lo, 1e-8)
    rgb = np.repeat(g[..., None] * 255.0, 3, axis=-1)

    def tint(classes):
        out = rgb.copy()
        for k in range(1, int(max(classes.max(), 0)) + 1):
            m = classes == k
            out[m] = (1 - alpha) * out[m] + alpha * _PALETTE[(k - 1) % len(_PALETTE)]
        return out

    panels = np.concatenate([rgb, tint(lab), tint(pred)], axis=2)
    return np.clip(np.rint(panels), 0, 255).astype(np.uint8)


class ImageSummary(keras.callbacks.Callback):
    """Write input / label / prediction overlays to TensorBoard every ``every_n_epochs`` epochs.

    Images go to ``log_dir`` under the tag ``"overlays"`` (step = epoch, 1-based), one image per
    sample (2D) or per chosen slice (3D); see :func:`overlay_panels`.

    Args:
        log_dir: TensorBoard directory of the image events.
        images: A fixed batch of inputs ``[B, ...]`` (numpy).
        labels: Matching labels.
        every_n_epochs: Period in epochs (the first and the last epoch are always written).
        max_outputs: Maximum images per summary.
        num_slices: Slices per 3D sample.
        from_logits: Whether a 1-channel output is a logit.
    """

    def __init__(self, log_dir, images, labels, every_n_epochs: int = 5, max_outputs: int = 6, num_slices: int = 3, from_logits: bool = True):
        super().__init__()
        if every_n_epochs < 1:
            raise ConfigError(f"must be >= 1, got {every_n_epochs}", path="image_every_epochs")
        self.log_dir = str(log_dir)
        self.images = np.asarray(images)
        self.labels = np.asarray(labels)
        self.every_n_epochs = int(every_n_epochs)
        self.max_outputs = int(max_outputs)
        self.num_slices = int(num_slices)
        self.from_logits = from_logits
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every_n_epochs and epoch != 0 and (last is None or epoch + 1 != last):
            return
        pred = self.model(self.images, training=False)  # eager, cross-replica: the whole batch
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred
        pred = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(pred, "float32")))
        panels = overlay_panels(self.images, self.labels, pred, self.num_slices, self.from_logits)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image("overlays", panels, step=epoch + 1, max_outputs=self.max_outputs)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
