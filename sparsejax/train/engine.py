"""One training engine: the model protocol, the update every step makes, and the epoch driver.

A model plugs in through :class:`Model` (in the spirit of nanodo's model and loss
factories): ``init(key) -> params`` and ``loss(params, batch, hyper) -> (loss, aux)``, and
optionally ``constrain_grads`` / ``constrain_params`` (e.g. unit-norm decoder rows).
:func:`gradient_step` is the one update every train step makes with it. A model's train
step (data, bookkeeping such as firing counts, seeds in one program) is built around that
call, and :func:`run_epochs` drives it with everything a run needs around the device work:

- one :class:`~sparsejax.train.logs.Progress` display (rate and ETA),
- metrics fetched one log point late (:class:`DelayedMetrics`), so the device queue never
  stalls on a host copy,
- one divergence check (:func:`raise_if_diverged`, :class:`TrainingDiverged`),
- one checkpointer (:class:`~sparsejax.train.checkpoint.Checkpointer`, orbax): a save at
  every epoch's end and at an interrupt (SIGINT/SIGTERM finish the current step; a second
  Ctrl-C aborts at once),
- one resume check (:func:`check_resumable`) against the config stored in the newest
  checkpoint.

The VAE-SAE hybrid (:mod:`sparsejax.train.loop`) and the standalone SAE
(:mod:`sparsejax.train.sae`) both train through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
import optax
from jax import lax

from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.errors import ConfigError, RunExistsError, TrainingDiverged
from sparsejax.train.logs import METRICS_FILE, Progress

CHECKPOINT_DIR = "checkpoints"


# --------------------------------------------------------------------------- the protocol
class Model(Protocol):
    """What the engine needs of a model (pure functions over a parameter pytree).

    ``loss`` returns a scalar and an auxiliary pytree (loss terms, codes). Under
    ``jax.shard_map`` it may return a per-device part whose ``psum`` over the data axis is
    the global loss (:func:`gradient_step` sums the gradients then).

    Optional methods, looked up by name: ``constrain_grads(grads, params) -> grads``
    (before the optimiser) and ``constrain_params(params) -> params`` (after it).
    """

    def init(self, key: jax.Array) -> Any:
        """The parameters of one model from a typed key."""

    def loss(self, params: Any, batch: Any, hyper: Any) -> tuple[jax.Array, Any]:
        """``(loss, aux)`` of one batch; ``hyper`` holds traced settings such as k."""


def gradient_step(model: Model, tx: optax.GradientTransformation, params, opt_state, batch,
                  hyper, *, axis_name: str | None = None):
    """One optimiser step on ``model.loss``: ``(params, opt_state, loss, aux)``.

    With ``axis_name`` (inside ``shard_map``) the per-device gradients and losses are
    summed over that axis first: with losses that are local sums over global constants,
    this is the exact full-batch gradient.
    """
    (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(params, batch, hyper)
    if axis_name is not None:
        grads, loss = lax.psum((grads, loss), axis_name)
    if hasattr(model, "constrain_grads"):
        grads = model.constrain_grads(grads, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if hasattr(model, "constrain_params"):
        params = model.constrain_params(params)
    return params, opt_state, loss, aux


# --------------------------------------------------------------------------- the driver
class Trainer:
    """What a model's training supplies to :func:`run_epochs` (subclass it).

    Subclasses set ``epochs``, ``steps_per_epoch``, ``log_every`` (steps between metric
    fetches; the epoch's last step is always fetched), ``run_names`` (one label per model
    trained together, for errors), ``config`` (the JSON-ready config stored with every
    checkpoint and checked on resume) and ``step_count`` (the host copy of the global step,
    which numbers checkpoints: ``step`` advances it), and implement :meth:`step` and
    :meth:`log`. The state must have a ``bad_step`` leaf (per run, the first step whose
    loss was non-finite, -1 if none).
    """

    epochs: int
    steps_per_epoch: int
    log_every: int
    run_names: Sequence[str]
    config: dict
    step_count: int

    def step(self, state, epoch: int, step_in_epoch: int) -> tuple[Any, dict]:
        """One dispatch of :meth:`steps_in_call` steps from ``step_in_epoch``: ``(state,
        metrics)``; metrics (of the dispatch's last step) on the device, with a
        ``bad_step`` entry."""
        raise NotImplementedError

    def steps_in_call(self, step_in_epoch: int) -> int:
        """How many optimiser steps the dispatch at ``step_in_epoch`` runs (default 1; a
        trainer that scans T steps per call returns T where a call fits, 1 elsewhere)."""
        return 1

    def log(self, done: int, epoch: int, metrics: dict) -> str:
        """Metrics of a log point, on the host: write them, return the progress text."""
        raise NotImplementedError

    def end_epoch(self, state, epoch: int, timing: EpochTiming) -> tuple[Any, Any]:
        """Evaluate and log a finished epoch: ``(state for the next epoch, records)``."""
        return state, None

    def bad_steps(self, state) -> np.ndarray:
        """Per run, the first step whose loss was non-finite (-1: none); syncs the device."""
        return np.asarray(jax.device_get(state.bad_step))

    def meta(self, epoch: int, step_in_epoch: int) -> dict:
        """The JSON metadata saved beside a checkpoint at this position."""
        return {"epoch": epoch, "step_in_epoch": step_in_epoch, "config": self.config}


@dataclasses.dataclass(frozen=True)
class EpochTiming:
    """Wall times of one epoch: ``steps`` run in this process over ``train_s`` seconds
    (compilation included in a run's first), from ``started`` (``time.perf_counter``)."""

    steps: int
    train_s: float
    started: float


def run_epochs(trainer: Trainer, state, ckpt: Checkpointer, progress: Progress, *,
               epoch: int = 0, step_in_epoch: int = 0,
               on_epoch: Callable[[Any], None] | None = None) -> tuple[Any, str]:
    """Train from ``(epoch, step_in_epoch)`` to the end: ``(state, "done" | "interrupted")``.

    A checkpoint is saved after every epoch and at an interrupt; ``on_epoch(records)``
    runs after each epoch's save.
    """
    steps = trainer.steps_per_epoch
    with StopFlag() as stop:
        while epoch < trainer.epochs:
            started, first = time.perf_counter(), step_in_epoch
            delayed = DelayedMetrics(lambda done, m, e=epoch: _log_point(trainer, progress,
                                                                          ckpt, done, e, m))
            while step_in_epoch < steps:
                before = step_in_epoch
                step_in_epoch += trainer.steps_in_call(step_in_epoch)
                state, metrics = trainer.step(state, epoch, before)
                # a log point every log_every steps (or the first call past one), and the end
                if (step_in_epoch // trainer.log_every > before // trainer.log_every
                        or step_in_epoch == steps):
                    delayed.push(epoch * steps + step_in_epoch, metrics)
                if stop.is_set():
                    delayed.flush()
                    raise_if_diverged(trainer.bad_steps(state), trainer.run_names, ckpt)
                    ckpt.save(trainer.step_count, state, trainer.meta(epoch, step_in_epoch))
                    ckpt.wait()
                    progress.message(f"interrupted at epoch {epoch} step {step_in_epoch}/{steps}"
                                     f"; saved checkpoint {ckpt.latest_step()} in "
                                     f"{ckpt.directory}; continue with --resume")
                    return state, "interrupted"
            delayed.flush()
            raise_if_diverged(trainer.bad_steps(state), trainer.run_names, ckpt)
            timing = EpochTiming(step_in_epoch - first, time.perf_counter() - started, started)
            state, records = trainer.end_epoch(state, epoch, timing)
            epoch, step_in_epoch = epoch + 1, 0
            ckpt.save(trainer.step_count, state, trainer.meta(epoch, 0))
            progress.reset_rate()
            if on_epoch is not None:
                on_epoch(records)
    return state, "done"


def _log_point(trainer: Trainer, progress: Progress, ckpt: Checkpointer, done: int, epoch: int,
               metrics: dict) -> None:
    metrics = jax.device_get(metrics)
    raise_if_diverged(metrics["bad_step"], trainer.run_names, ckpt)
    progress.update(done, trainer.log(done, epoch, metrics))


class DelayedMetrics:
    """Metrics handed to ``report(done, metrics)`` one log point late.

    :meth:`push` starts the device-to-host copy of this point's metrics and reports the
    previous point's, which is on the host by then: reading metrics never stalls the
    device queue. :meth:`flush` reports what is pending (at an epoch's end, an interrupt).
    """

    def __init__(self, report: Callable[[int, dict], None]):
        self._report = report
        self._pending: tuple[int, dict] | None = None

    def push(self, done: int, metrics: dict) -> None:
        self.flush()
        for v in jax.tree.leaves(metrics):
            v.copy_to_host_async()
        self._pending = (done, metrics)

    def flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._report(*pending)


def raise_if_diverged(bad_steps, run_names: Sequence[str], ckpt: Checkpointer | None) -> None:
    """Raises :class:`TrainingDiverged` if some run's ``bad_steps`` entry is >= 0.

    Args:
      bad_steps: int ``[S]`` (or a scalar), per run the first step with a NaN/Inf loss.
      run_names: ``S`` labels for the message.
      ckpt: where the last good checkpoint is (named in the message).
    """
    bad_S = np.atleast_1d(np.asarray(bad_steps))
    if np.all(bad_S < 0):
        return
    i = int(np.argmax(bad_S >= 0))
    first = int(bad_S[bad_S >= 0].min())
    where = "no checkpoint had been written yet"
    if ckpt is not None:
        ckpt.wait()
        last = ckpt.latest_step()
        if last is not None:
            where = f"the last good checkpoint (step {last}) is kept in {ckpt.directory}"
    raise TrainingDiverged(
        f"the loss became NaN or Inf at step {first} ({run_names[i]}); training stopped "
        f"and nothing after it was saved; {where}. Lower the learning rate or check the data.")


class StopFlag:
    """SIGINT/SIGTERM set a flag the driver polls (main thread only); a second SIGINT aborts."""

    def __init__(self):
        self._event = threading.Event()
        self._old = {}

    def is_set(self) -> bool:
        return self._event.is_set()

    def _handler(self, signum, frame):
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._event.set()

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, OSError):
                    self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- run directories
def has_checkpoints(ckpt_dir: Path) -> bool:
    return ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())


def refuse_existing_run(out: Path, resume: bool) -> None:
    """Raises :class:`RunExistsError` if ``out`` holds a run and ``resume`` is off."""
    if not resume and (has_checkpoints(out / CHECKPOINT_DIR) or (out / METRICS_FILE).exists()):
        raise RunExistsError(f"{out} already holds a run (checkpoints or {METRICS_FILE}); "
                             "resume it with --resume / resume=True, or choose another output "
                             "directory")


def check_resumable(saved: Mapping[str, Any], new: Mapping[str, Any],
                    free: Collection[str] = ()) -> None:
    """Refuse to resume with a config that would compute something different.

    Args:
      saved, new: the configs as JSON-ready dicts (the saved one from the checkpoint).
      free: fields that may differ (they change no computed number, e.g. ``epochs``).
    """
    names = sorted(set(saved) | set(new))
    diff = [n for n in names if n not in free and saved.get(n) != new.get(n)]
    if diff:
        detail = ", ".join(f"{n}: saved {saved.get(n)!r} vs now {new.get(n)!r}" for n in diff)
        may = f"; only {', '.join(sorted(free))} may change on resume" if free else ""
        raise ConfigError(f"cannot resume: the config differs from the saved run in {detail}"
                          f"{may}")
