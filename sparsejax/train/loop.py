"""The training loop: epochs of jitted steps, end-of-epoch evaluation, logs, checkpoints.

:func:`train` is what studies call. It writes to ``out_dir``::

    config.json        the TrainConfig
    metrics.jsonl      one record per (epoch, seed): see :func:`epoch_records`
    checkpoints/       orbax checkpoints, one per epoch (and one at an interrupt)
    tb/seed_<s>/       TensorBoard event files

Guarantees: the batch of step t depends only on (seed, t), and a checkpoint holds the whole
state, so ``resume=True`` continues a killed or interrupted run and reproduces the
uninterrupted one. SIGINT/SIGTERM finish the current step, save, and return with status
``"interrupted"`` (a second Ctrl-C aborts at once). A NaN/Inf loss raises
:class:`TrainingDiverged` naming the first bad step; nothing after the last good epoch is
saved. A config that cannot run is refused before anything is compiled.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.data import SPECS, FactorDataset, get_dataset
from sparsejax.train import config as config_lib
from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.config import ConfigError, TrainConfig
from sparsejax.train.evaluate import EvalResult, RunEval, default_metrics, make_evaluator
from sparsejax.train.logs import METRICS_FILE, MetricsLog, Progress
from sparsejax.train.state import (LOSS_TERMS, TrainState, abstract_state, init_state,
                                   model_graphdef, start_epoch)
from sparsejax.train.step import (batch_sharding, check_batch, global_array, host_batch,
                                  make_mesh, make_train_step, replicated)

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# fields that may differ between a run and its resumption (they change no computed number)
RESUMABLE_CHANGES = ("epochs", "log_every", "keep_checkpoints", "data_dir", "source")

MetricsFn = Callable[[RunEval], dict]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


class RunExistsError(RuntimeError):
    """``out_dir`` already holds a run and ``resume`` was not asked for."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      config: the run's config.
      history: every epoch record written so far (all seeds), oldest first.
      state: the final train state (leading seed axis S).
      graphdef: the model's graph definition (``nnx.merge(graphdef, params_of_one_seed)``).
      status: ``"done"`` or ``"interrupted"``.
      out_dir: where everything was written.
    """

    config: TrainConfig
    history: list[dict]
    state: TrainState
    graphdef: nnx.GraphDef
    status: str
    out_dir: Path

    def model(self, i: int = 0) -> nnx.Module:
        """The trained model of run ``i`` (seed ``config.seeds[i]``)."""
        return nnx.merge(self.graphdef, jax.tree.map(lambda x: x[i], self.state.params))


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
          init_from: str | Path | None = None, metrics_fn: MetricsFn | None = default_metrics,
          on_epoch: Callable[[list[dict]], None] | None = None,
          devices: Sequence[jax.Device] | None = None, dataset: FactorDataset | None = None,
          tensorboard: bool = True, progress_tty: bool | None = None) -> TrainResult:
    """Train ``cfg.num_seeds`` runs of ``cfg`` together and evaluate them every epoch.

    Args:
      cfg: the configuration (validated when built).
      out_dir: the run directory (created).
      resume: continue from the newest checkpoint in ``out_dir`` (a fresh start if none).
        Without it, a directory that already holds a run is refused.
      init_from: start from the newest checkpoint of another run directory (its parameters,
        optimiser and controller state, RNG stream and step) with this ``cfg``'s schedule
        from epoch 0: e.g. continue collapsed runs at a held k.
      metrics_fn: the eval hook, ``RunEval -> dict`` merged into each epoch record
        (default :func:`default_metrics`; None for none).
      on_epoch: called with the epoch's records (one per seed) after they are written.
      devices: devices of the data-parallel mesh (default: all).
      dataset: use this dataset instead of ``get_dataset(cfg.dataset, cfg.source, ...)``.
      tensorboard: also write TensorBoard event files.
      progress_tty: force the progress bar on/off (default: when stderr is a terminal).
    """
    out = Path(out_dir)
    mesh = make_mesh(devices)
    try:
        check_batch(cfg.batch_size, mesh)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ckpt_dir = out / CHECKPOINT_DIR
    if not resume and (_has_checkpoints(ckpt_dir) or (out / METRICS_FILE).exists()):
        raise RunExistsError(f"{out} already holds a run (checkpoints or {METRICS_FILE}); "
                             "resume it with --resume / resume=True, or choose another output "
                             "directory")
    if resume and _has_checkpoints(ckpt_dir):
        saved = json.loads((out / CONFIG_FILE).read_text()) if (out / CONFIG_FILE).exists() \
            else None
        if saved is not None:
            check_resumable(config_lib.from_dict(saved), cfg)
    ds = dataset if dataset is not None else get_dataset(cfg.dataset, cfg.source, cfg.data_dir)
    channels = ds.observation_shape[-1]
    spe = cfg.resolved_steps_per_epoch(len(ds))
    graphdef = model_graphdef(cfg, channels)
    rep = replicated(mesh)

    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(ckpt_dir, keep=cfg.keep_checkpoints)
    log = MetricsLog(out, cfg.seeds, tensorboard=tensorboard)
    try:
        abstract = abstract_state(cfg, channels, rep)
        if resume and ckpt.latest_step() is not None:
            state, meta = ckpt.restore(abstract)
            epoch, j = int(meta["epoch"]), int(meta["step_in_epoch"])
        elif init_from is not None:
            src = Checkpointer(Path(init_from) / CHECKPOINT_DIR)
            state, _ = src.restore(abstract)
            src.close()
            state = jax.jit(start_epoch, out_shardings=rep)(state)
            epoch, j = 0, 0
        else:
            state = init_state(cfg, channels, rep)
            epoch, j = 0, 0
        log.truncate(epoch)  # records past the checkpoint (or of a run killed before one)
        if jax.process_index() == 0:
            (out / CONFIG_FILE).write_text(cfg.to_json() + "\n")

        step_fn, evaluate, reset = _compiled(cfg, ds, mesh)
        progress = Progress(cfg.epochs * spe, epoch * spe + j, cfg.batch_size * cfg.num_seeds,
                            tty=progress_tty)
        status = "done"
        gstep = int(jax.device_get(state.step)[0])  # host copy of the global step
        key_data = None if ds.on_device else np.asarray(jax.device_get(state.key))
        image_sharding = batch_sharding(mesh, seed_axis=True)
        with _StopFlag() as stop:
            while epoch < cfg.epochs:
                k = int(cfg.schedule(epoch))
                k_arr = jnp.asarray(k, jnp.int32)
                t_epoch, steps_before = time.perf_counter(), j
                pending = None
                while j < spe:
                    if ds.on_device:
                        state, m = step_fn(state, k_arr)
                    else:  # file/TFDS data: the same (seed, step) batch, read on the host
                        images = global_array(host_batch(ds, key_data, gstep,
                                                         cfg.batch_size), image_sharding)
                        state, m = step_fn(state, k_arr, images)
                    j, gstep = j + 1, gstep + 1
                    if j % cfg.log_every == 0 or j == spe:
                        # read the previous log point's metrics (already on the host by now)
                        # and start copying this one's: no stall of the device queue
                        if pending is not None:
                            _report(pending, progress, log, cfg, epoch, k, ckpt)
                        for v in m.values():
                            v.copy_to_host_async()
                        pending = (epoch * spe + j, m)
                    if stop.is_set():
                        if pending is not None:
                            _report(pending, progress, log, cfg, epoch, k, ckpt)
                        _check_finite(state, ckpt, cfg)
                        ckpt.save(state, _meta(cfg, epoch, j))
                        ckpt.wait()
                        progress.message(f"interrupted at epoch {epoch} step {j}/{spe}; saved "
                                         f"checkpoint {ckpt.latest_step()} in {ckpt.directory}"
                                         "; continue with --resume")
                        status = "interrupted"
                        break
                if status == "interrupted":
                    break
                if pending is not None:
                    _report(pending, progress, log, cfg, epoch, k, ckpt)
                _check_finite(state, ckpt, cfg)  # syncs: the epoch's steps are done
                t_train = time.perf_counter() - t_epoch
                ev = evaluate(state.params, k)
                records = epoch_records(cfg, epoch, k, state, ev, metrics_fn,
                                        images_per_s=(j - steps_before) * cfg.batch_size
                                        * cfg.num_seeds / max(t_train, 1e-9),
                                        train_time_s=t_train,
                                        epoch_time_s=time.perf_counter() - t_epoch)
                log.write(records)
                progress.message(_epoch_line(records))
                state = reset(state)
                epoch, j = epoch + 1, 0
                ckpt.save(state, _meta(cfg, epoch, 0))
                progress.reset_rate()
                if on_epoch is not None:
                    on_epoch(records)
        progress.close()
        ckpt.wait()
        return TrainResult(cfg, log.records(), state, graphdef, status, out)
    finally:
        log.close()
        ckpt.close()


# --------------------------------------------------------------------------- compiled fns
# Fields that change no compiled program: runs differing only in these share one compiled
# step and evaluator within a process (a study's repeated cells, a resumed run).
_PROGRAM_IRRELEVANT = dict(epochs=1, seed=0, log_every=1, keep_checkpoints=1, data_dir=None,
                           source="auto", steps_per_epoch=1,
                           schedule={"kind": "linear", "start": 1, "end": 1, "length": 1,
                                     "stages": 1})
_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 8


def _compiled(cfg: TrainConfig, ds: FactorDataset, mesh) -> tuple:
    """(step, evaluate, reset) for ``cfg`` on ``mesh``, built once per program."""
    key = (cfg.replace(**_PROGRAM_IRRELEVANT), ds.name, ds.source, ds.location, ds.on_device,
           mesh)
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        graphdef = model_graphdef(cfg, ds.observation_shape[-1])
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.popitem(last=False)
        _CACHE[key] = (make_train_step(cfg, graphdef, ds, mesh),
                       make_evaluator(cfg, graphdef, ds, mesh),
                       jax.jit(start_epoch, donate_argnums=0, out_shardings=replicated(mesh)))
    return _CACHE[key]


# --------------------------------------------------------------------------- records
def epoch_records(cfg: TrainConfig, epoch: int, k: int, state: TrainState, ev: EvalResult,
                  metrics_fn: MetricsFn | None, **extra) -> list[dict]:
    """One JSON-able record per seed for a finished epoch.

    Fields: ``epoch``, ``seed``, ``step`` (global, after the epoch), ``k`` (the target),
    ``l1_coef`` and ``l0_ema`` (controller), ``train`` (means of the epoch's loss terms),
    ``eval`` (loss terms on the evaluation set; ``l0`` there is the achieved mean L0),
    ``dead_fraction`` (per threshold: units never above it on the evaluation set),
    ``firing_counts`` (per threshold, per unit, on the evaluation set), ``eval_size``,
    ``train_firing_counts`` (per unit, h > 0, over the epoch's training examples),
    ``train_examples``, whatever ``metrics_fn`` returns, and ``extra`` (the loop adds
    ``images_per_s``, training images per second over the epoch's steps, compilation
    included in the first; ``train_time_s``; ``epoch_time_s``, with the evaluation pass).
    """
    host = jax.device_get({"step": state.step, "sums": state.sums, "fire": state.fire,
                           "log_coef": state.ctrl.log_coef, "l0_ema": state.ctrl.l0_ema})
    records = []
    for i, seed in enumerate(cfg.seeds):
        steps = max(float(host["sums"]["steps"][i]), 1.0)
        run = ev.run(i)
        coef = float(np.exp(host["log_coef"][i])) if cfg.method == "l1" else 0.0
        eval_terms = dict(run.terms)
        eval_terms["loss"] = (eval_terms["recon"] + cfg.beta * eval_terms["kl"]
                              + cfg.sae_weight * eval_terms["sae"] + coef * eval_terms["l1"])
        rec = {
            "epoch": epoch, "seed": seed, "step": int(host["step"][i]), "k": int(k),
            "method": cfg.method, "dataset": cfg.dataset,
            "l1_coef": coef,
            "l0_ema": float(host["l0_ema"][i]) if cfg.method == "l1" else None,
            "train": {n: float(host["sums"][n][i]) / steps for n in LOSS_TERMS},
            "eval": eval_terms,
            "dead_fraction": run.dead_fraction(),
            "firing_counts": {_tau(t): c.tolist() for t, c in zip(run.thresholds, run.counts)}
            if run.counts.shape[1] else {},
            "eval_size": run.n,
            "train_firing_counts": host["fire"][i].tolist() if cfg.sparse else [],
            "train_examples": int(steps) * cfg.batch_size,
        }
        if metrics_fn is not None:
            rec.update(metrics_fn(run))
        rec.update(extra)
        records.append(rec)
    return records


def _tau(t: float) -> str:
    return repr(float(t)) if t else "0"


def _epoch_line(records: list[dict]) -> str:
    parts = []
    for r in records:
        dead = r["dead_fraction"].get("0")
        mig = r.get("mig_mean")
        parts.append(f"seed {r['seed']}: loss {r['eval']['loss']:.2f} recon "
                     f"{r['eval']['recon']:.2f} kl {r['eval']['kl']:.2f} L0 {r['eval']['l0']:.1f}"
                     + (f" dead {100 * dead:.1f}%" if dead is not None else "")
                     + (f" MIG {mig:.3f}" if mig is not None else ""))
    r0 = records[0]
    return (f"epoch {r0['epoch'] + 1} done (k {r0['k']}, {r0['images_per_s']:.0f} img/s): "
            + "; ".join(parts))


# --------------------------------------------------------------------------- helpers
def _meta(cfg: TrainConfig, epoch: int, step_in_epoch: int) -> dict:
    return {"epoch": epoch, "step_in_epoch": step_in_epoch, "config": config_lib.to_dict(cfg)}


def _report(pending, progress: Progress, log: MetricsLog, cfg: TrainConfig, epoch: int, k: int,
            ckpt: Checkpointer) -> None:
    done, m = pending
    m = jax.device_get(m)
    _raise_if_bad(m["bad_step"], cfg, ckpt)
    progress.update(done, epoch=epoch, epochs=cfg.epochs, k=k, loss=float(np.mean(m["loss"])),
                    l0=float(np.mean(m["l0"])))
    log.step_scalars(cfg.seeds, done, {n: m[n] for n in (*LOSS_TERMS, "l1_coef")})


def _check_finite(state: TrainState, ckpt: Checkpointer, cfg: TrainConfig) -> None:
    _raise_if_bad(np.asarray(jax.device_get(state.bad_step)), cfg, ckpt)


def _raise_if_bad(bad_S: np.ndarray, cfg: TrainConfig, ckpt: Checkpointer) -> None:
    bad_S = np.asarray(bad_S)
    if np.all(bad_S < 0):
        return
    i = int(np.argmax(bad_S >= 0))
    first = int(bad_S[bad_S >= 0].min())
    ckpt.wait()
    last = ckpt.latest_step()
    where = (f"the last good checkpoint (step {last}) is kept in {ckpt.directory}"
             if last is not None else "no checkpoint had been written yet")
    raise TrainingDiverged(
        f"the loss became NaN or Inf at step {first} (seed {cfg.seeds[i]}); training stopped "
        f"and nothing after it was saved; {where}. Lower the learning rate or check the data.")


def _has_checkpoints(ckpt_dir: Path) -> bool:
    return ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())


def check_resumable(saved: TrainConfig, new: TrainConfig) -> None:
    """Refuse to resume with a config that would compute something different."""
    a, b = config_lib.to_dict(saved), config_lib.to_dict(new)
    diff = sorted(n for n in a if a[n] != b[n] and n not in RESUMABLE_CHANGES)
    if diff:
        detail = ", ".join(f"{n}: saved {a[n]!r} vs now {b[n]!r}" for n in diff)
        raise ConfigError(f"cannot resume: the config differs from the saved run in {detail}")


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop polls (main thread only); a second SIGINT aborts."""

    def __init__(self):
        self._event = threading.Event()
        self._old = {}

    def is_set(self) -> bool:
        return self._event.is_set()

    def _handler(self, signum, frame):
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._event.set()

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, OSError):
                    self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- restoring
def load_run(out_dir: str | Path, *, devices=None) -> TrainResult:
    """The newest checkpoint of a run directory as a :class:`TrainResult` (no training)."""
    out = Path(out_dir)
    cfg = config_lib.from_dict(json.loads((out / CONFIG_FILE).read_text()))
    channels = SPECS[cfg.dataset].observation_shape[-1]
    mesh = make_mesh(devices)
    rep = replicated(mesh)
    with Checkpointer(out / CHECKPOINT_DIR) as ckpt:
        state, _ = ckpt.restore(abstract_state(cfg, channels, rep))
    return TrainResult(cfg, MetricsLog(out, (), tensorboard=False).records(), state,
                       model_graphdef(cfg, channels), "done", out)
