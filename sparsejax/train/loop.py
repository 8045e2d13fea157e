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
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparsejax.atomic_io import read_json, write_atomic
from sparsejax.data import SPECS, FactorDataset, get_dataset
from sparsejax.dir_lock import DirLock, output_path
from sparsejax.metrics.dead_units import tau_key
from sparsejax.models import LAYER_METHODS
from sparsejax.sparsity.remedies import reset_moments
from sparsejax.train import config as config_lib
from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.config import TrainConfig
from sparsejax.train.engine import (CHECKPOINT_DIR, EpochTiming, Trainer, check_resumable,
                                    refuse_existing_run, run_epochs)
from sparsejax.train.errors import ConfigError
from sparsejax.train.evaluate import EvalResult, RunEval, default_metrics, make_evaluator
from sparsejax.train.hybrid import HybridModel, model_graphdef
from sparsejax.train.logs import METRICS_FILE, MetricsLog, Progress
from sparsejax.train.mesh import batch_sharding, check_batch, global_array, make_mesh, replicated
from sparsejax.train.state import (LOSS_TERMS, TrainState, abstract_state, graft, init_state,
                                   optimizer, start_epoch)
from sparsejax.train.step import (host_batch, make_resample_step, make_train_step,
                                   scan_length)

CONFIG_FILE = "config.json"

MetricsFn = Callable[[RunEval], dict]


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
        """The trained model of run ``i`` (``config.runs[i]``: its method and seed)."""
        return nnx.merge(self.graphdef, jax.tree.map(lambda x: x[i], self.state.params))


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
          init_from: str | Path | None = None, metrics_fn: MetricsFn | None = default_metrics,
          on_epoch: Callable[[list[dict]], None] | None = None,
          devices: Sequence[jax.Device] | None = None, dataset: FactorDataset | None = None,
          tensorboard: bool = True, progress_tty: bool | None = None) -> TrainResult:
    """Train the ``cfg.num_runs`` runs of ``cfg`` (its seeds, of every method of its
    ``group``) together and evaluate them every epoch.

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
    out = output_path(out_dir)
    mesh = make_mesh(devices)
    try:
        check_batch(cfg.batch_size, mesh)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    with DirLock(out, enabled=jax.process_index() == 0):
        refuse_existing_run(out, resume)
        ds = dataset if dataset is not None else get_dataset(cfg.dataset, cfg.source,
                                                              cfg.data_dir)
        ckpt = Checkpointer(out / CHECKPOINT_DIR, keep=cfg.keep_checkpoints)
        log = MetricsLog(out, cfg.run_names, tensorboard=tensorboard)
        try:
            state, epoch, step_in_epoch = _restore_or_init(cfg, ds, mesh, ckpt, resume,
                                                           init_from)
            # drop records past the checkpoint (or of a run killed before one)
            log.truncate(lambda r: r["epoch"] < epoch)
            if jax.process_index() == 0:
                write_atomic(out / CONFIG_FILE, cfg.to_json() + "\n")
            trainer = HybridTrainer(cfg, ds, mesh, log, metrics_fn, state)
            progress = Progress(cfg.epochs * trainer.steps_per_epoch,
                                epoch * trainer.steps_per_epoch + step_in_epoch,
                                cfg.batch_size * cfg.num_runs, tty=progress_tty)
            trainer.progress = progress
            state, status = run_epochs(trainer, state, ckpt, progress, epoch=epoch,
                                       step_in_epoch=step_in_epoch, on_epoch=on_epoch)
            progress.close()
            return TrainResult(cfg, log.records(), state, trainer.graphdef, status, out)
        finally:
            log.close()
            ckpt.close()


def evaluate_init(cfg: TrainConfig, out_dir: str | Path, *,
                  metrics_fn: MetricsFn | None = default_metrics,
                  devices: Sequence[jax.Device] | None = None,
                  dataset: FactorDataset | None = None) -> list[dict]:
    """The untrained control: every seed's initial parameters evaluated once at the
    schedule's final k on the last epoch's evaluation set, no training step.

    Writes ``config.json`` and ``metrics.jsonl`` (one record per seed, ``epoch`` 0, as
    :func:`epoch_records`) to ``out_dir`` and returns the records. The initial parameters
    are the ones :func:`train` starts from with the same seeds.
    """
    out = output_path(out_dir)
    mesh = make_mesh(devices)
    with DirLock(out, enabled=jax.process_index() == 0):
        ds = dataset if dataset is not None else get_dataset(cfg.dataset, cfg.source,
                                                              cfg.data_dir)
        state = init_state(cfg, ds.observation_shape[-1], replicated(mesh))
        evaluate = _compiled(cfg, ds, mesh)[2]
        k = cfg.schedule.end
        records = epoch_records(cfg, 0, k, state, evaluate(state.params, k, cfg.last_eval_size),
                                metrics_fn)
        if jax.process_index() == 0:
            write_atomic(out / CONFIG_FILE, cfg.to_json() + "\n")
            write_atomic(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))
    return records


def _restore_or_init(cfg: TrainConfig, ds: FactorDataset, mesh, ckpt: Checkpointer,
                     resume: bool, init_from: str | Path | None
                     ) -> tuple[TrainState, int, int]:
    """``(state, epoch, step_in_epoch)``: the newest checkpoint (``resume``), another run's
    newest checkpoint at epoch 0 (``init_from``), or a fresh state."""
    channels = ds.observation_shape[-1]
    rep = replicated(mesh)
    if resume and ckpt.latest_step() is not None:
        saved = ckpt.metadata()["config"]
        # a field added since that run was saved: its default computes what the run did
        saved = {**{n: v for n, v in config_lib.to_dict(TrainConfig()).items()
                    if n not in saved}, **saved}
        check_resumable(saved, config_lib.to_dict(cfg),
                        free=config_lib.resumable_fields(TrainConfig))
        state, meta = ckpt.restore(abstract_state(cfg, channels, rep))
        return state, int(meta["epoch"]), int(meta["step_in_epoch"])
    if init_from is None:
        return _prepare(cfg, ds, init_state(cfg, channels, rep), rep), 0, 0
    if not (Path(init_from) / CHECKPOINT_DIR).is_dir():
        raise ConfigError(f"--init-from {init_from}: no run there (expected a run "
                          f"directory with {CHECKPOINT_DIR}/)")
    with Checkpointer(Path(init_from) / CHECKPOINT_DIR, create=False) as src:
        saved, now = src.metadata()["config"], config_lib.to_dict(cfg)
        differ = [f"{n}: {saved.get(n)!r} there, {now[n]!r} here"
                  for n in config_lib.fields_affecting(TrainConfig, "model")
                  if _shape_of(n, saved.get(n)) != _shape_of(n, now[n])]
        if differ:
            raise ConfigError(f"--init-from {init_from} holds a different model ("
                              + "; ".join(differ) + "): the model's shape must match")
        src_cfg = config_lib.from_dict({**now, "group": (), **{n: saved[n] for n in (
            "method", "sparse_input", "sparse_init", "topk_relu", "remedy", "group", "seed",
            "num_seeds")
            if n in saved}})
        source, _ = src.restore(abstract_state(src_cfg, channels, rep))
        source = jax.tree.map(lambda a: a[np.asarray(_source_runs(cfg, src_cfg, init_from))],
                              source)
    try:  # what the two models share comes from the source (a new sparsifier's are fresh)
        state = graft(init_state(cfg, channels, rep), source)
    except ValueError as e:
        raise ConfigError(f"--init-from {init_from}: {e}") from None
    state = jax.jit(start_epoch, out_shardings=rep)(state)
    # a source that was whitened already keeps its estimate (a follow-up continues it)
    return _prepare(cfg, ds, state, rep,
                    whiten=saved.get("sparse_input", "raw") != cfg.sparse_input), 0, 0


def _source_runs(cfg: TrainConfig, src: TrainConfig, where) -> list[int]:
    """The run of ``src`` each run of ``cfg`` starts from: the same run where the two
    programs hold the same runs (or, neither a group, as many); the run of its seed where
    ``src`` holds one run per seed (a shared warm-up serves every member of a group);
    else the run of the same member and seed (a follow-up of some members of a group)."""
    if cfg.runs == src.runs or (not cfg.group and not src.group
                                and cfg.num_runs == src.num_runs):
        return list(range(cfg.num_runs))
    if src.num_runs == src.num_seeds and set(cfg.seeds) <= set(src.seeds):
        return [src.seeds.index(s) for _, s in cfg.runs]
    if set(cfg.runs) <= set(src.runs):
        return [src.runs.index(r) for r in cfg.runs]
    raise ConfigError(f"--init-from {where} holds the runs {[f'{m} seed {s}' for m, s in src.runs]}"
                      f"; this run's {[f'{m} seed {s}' for m, s in cfg.runs]} are not among "
                      "them")


PREPARE_SAMPLES = 1024  # images whose sparse-layer inputs set a data-dependent start


def _prepare(cfg: TrainConfig, ds: FactorDataset, state: TrainState, rep, *,
             whiten: bool = True) -> TrainState:
    """The data-dependent start of the sparse layer (``sparse_init``, ``sparse_input``;
    :meth:`HybridModel.prepare`), per seed, from the inputs on :data:`PREPARE_SAMPLES`
    images drawn from ``eval_seed + 2``; the optimiser state of what it rewrites is reset.
    A config without either (or ``whiten=False`` and no ``sparse_init``) returns ``state``
    unchanged."""
    whiten = whiten and cfg.sparse_input == "whiten"
    if cfg.sparse_init == "default" and not whiten:
        return state
    model = HybridModel(cfg, ds.observation_shape[-1])
    tx = optimizer(cfg)
    base = jax.random.key(cfg.eval_seed + 2)
    factors = np.asarray(ds.sample_factors(base, PREPARE_SAMPLES))
    x = jnp.asarray(np.asarray(ds.render(factors), np.float32))
    k = jnp.asarray(cfg.k_at(0, 0, 1), jnp.int32)

    @jax.jit
    def prepare_seed(key, params, opt_state):
        params, mask = model.prepare(key, params, x, k, whiten=whiten)
        return params, reset_moments(tx, opt_state, mask)

    host = jax.device_get(state)
    params, opts = [], []
    for i, (_, seed) in enumerate(cfg.runs):
        p, o = prepare_seed(jax.random.fold_in(base, seed), *jax.tree.map(
            lambda a: a[i], (host.params, host.opt_state)))
        params.append(p)
        opts.append(o)
    stack = lambda *xs: np.stack([np.asarray(a) for a in xs])  # noqa: E731
    return jax.device_put(state.replace(params=jax.tree.map(stack, *params),
                                        opt_state=jax.tree.map(stack, *opts)), rep)


def _shape_of(field: str, value):
    """What a model field says about the parameters' shapes, for starting one run from
    another: every sparsifier sits on one sparse layer and whitening only adds to it, so
    any sparse arm can start from another's checkpoint (:func:`graft` keeps what they
    share)."""
    if field == "method" and value in LAYER_METHODS:
        return "sparse"
    # the input's whitening only adds parameters; a group only adds runs (and a run per
    # seed there starts each method of the group here)
    return None if field in ("sparse_input", "group") else value


class HybridTrainer(Trainer):
    """The hybrid's side of :func:`sparsejax.train.engine.run_epochs`: its step (device- or
    host-fed), its log points, and its end of epoch (evaluation, records, reset)."""

    def __init__(self, cfg: TrainConfig, ds: FactorDataset, mesh, log: MetricsLog,
                 metrics_fn: MetricsFn | None, state: TrainState):
        self.cfg, self.ds, self.metrics_log, self.metrics_fn = cfg, ds, log, metrics_fn
        self.epochs, self.log_every = cfg.epochs, cfg.log_every
        self.steps_per_epoch = cfg.resolved_steps_per_epoch(len(ds))
        self.run_names = [n.replace("_", " ") for n in cfg.run_names]
        self.config = config_lib.to_dict(cfg)
        (self.graphdef, self.step_fn, self.evaluate, self.reset, self.resample_fn,
         self.scan_fn) = _compiled(cfg, ds, mesh)
        self.progress: Progress | None = None
        self._k: tuple[int, jax.Array] | None = None  # (k, the same k on the device)
        self._last = (0, 0)  # (epoch, step in epoch) of the latest step
        self.step_count = int(jax.device_get(state.step)[0])  # host copy of the global step
        self._key_data = None if ds.on_device else np.asarray(jax.device_get(state.key))
        self._images = batch_sharding(mesh, seed_axis=True)

    def k(self, epoch: int, step_in_epoch: int) -> int:
        """The target k of one step (the schedule moves every step)."""
        return self.cfg.k_at(epoch, step_in_epoch, self.steps_per_epoch)

    def last_k(self, epoch: int) -> int:
        """k at the last step of ``epoch``: what its evaluation uses."""
        return self.k(epoch, self.steps_per_epoch - 1)

    def steps_in_call(self, step_in_epoch: int) -> int:
        """``scan_steps`` where a whole scan fits: at a multiple of it, inside the epoch,
        and with no resampling before its last step; 1 elsewhere (an epoch's remainder, a
        run resumed off the grid, host-fed data)."""
        t = self.cfg.scan_steps
        if (self.scan_fn is None or step_in_epoch % t
                or step_in_epoch + t > self.steps_per_epoch):
            return 1
        every = self.cfg.remedy.resample_every
        if every and (self.step_count + t - 1) // every > self.step_count // every:
            return 1
        return t

    def step(self, state: TrainState, epoch: int, step_in_epoch: int):
        t = self.steps_in_call(step_in_epoch)
        if t > 1:
            ks = np.array([self.k(epoch, step_in_epoch + i) for i in range(t)], np.int32)
            state, metrics_T = self.scan_fn(state, ks)
            self.step_count += t
            self._last = (epoch, step_in_epoch + t - 1)
            # the log point's metrics: the scan's last step (bad_step is cumulative), in
            # one dispatch; a resampling reads the last k from the host array
            return self._maybe_resample(state, ks[-1]), _last_row(metrics_T)
        k_now = self.k(epoch, step_in_epoch)
        if self._k is None or self._k[0] != k_now:  # one host-to-device copy per new k
            self._k = (k_now, jnp.asarray(k_now, jnp.int32))
        k = self._k[1]
        if self.ds.on_device:
            state, metrics = self.step_fn(state, k)
        else:  # file/TFDS data: the same (seed, step) batch, read on the host
            images = global_array(host_batch(self.ds, self._key_data, self.step_count,
                                             self.cfg.batch_size), self._images)
            state, metrics = self.step_fn(state, k, images)
        self.step_count += 1
        self._last = (epoch, step_in_epoch)
        return self._maybe_resample(state, k), metrics

    def _maybe_resample(self, state: TrainState, k) -> TrainState:
        """Resampling every ``remedy.resample_every`` steps, from the next step's batch."""
        every = self.cfg.remedy.resample_every
        if not every or self.step_count % every:
            return state
        if self.ds.on_device:
            return self.resample_fn(state, k)
        return self.resample_fn(state, k, global_array(host_batch(
            self.ds, self._key_data, self.step_count, self.cfg.batch_size), self._images))

    def log(self, done: int, epoch: int, metrics: dict) -> str:
        self.metrics_log.step_scalars(self.cfg.run_names, done,
                                      {n: metrics[n] for n in (*LOSS_TERMS, "l1_coef")})
        return (f"epoch {epoch + 1}/{self.epochs} loss {float(np.mean(metrics['loss'])):.3f} "
                f"k {self.k(*self._last)} L0 {float(np.mean(metrics['l0'])):.1f}")

    def end_epoch(self, state: TrainState, epoch: int, timing: EpochTiming):
        k = self.last_k(epoch)
        ev = self.evaluate(state.params, k, self.cfg.eval_size_at(epoch))
        records = epoch_records(
            self.cfg, epoch, k, state, ev, self.metrics_fn,
            images_per_s=timing.steps * self.cfg.batch_size * self.cfg.num_runs
            / max(timing.train_s, 1e-9),
            train_time_s=timing.train_s, epoch_time_s=time.perf_counter() - timing.started)
        self.metrics_log.write(records)
        if self.progress is not None:
            self.progress.message(_epoch_line(records))
        return self.reset(state), records


@jax.jit
def _last_row(metrics_T: dict) -> dict:
    return jax.tree.map(lambda m: m[-1], metrics_T)


# --------------------------------------------------------------------------- compiled fns
# Runs whose configs differ only in fields that shape no program (TrainConfig.program_key)
# share one compiled step and evaluator within a process (a study's cells, a resumed run);
# runs differing only in their evaluation set (a warm-up's final evaluation) share the step.
_STEPS: collections.OrderedDict = collections.OrderedDict()
_EVALUATORS: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 24  # the remedies study runs about 15 programs, then each again


def _cached(cache: collections.OrderedDict, key, build):
    if key in cache:
        cache.move_to_end(key)
    else:
        while len(cache) >= _CACHE_SIZE:
            cache.popitem(last=False)
        cache[key] = build()
    return cache[key]


def _compiled(cfg: TrainConfig, ds: FactorDataset, mesh) -> tuple:
    """(graphdef, step, evaluate, reset, resample or None, the ``scan_steps`` scan or None)
    for ``cfg`` on ``mesh``, built once per program (each compiles on its first call)."""
    data = (ds.name, ds.source, ds.location, ds.on_device, mesh)

    def steps():
        graphdef = model_graphdef(cfg, ds.observation_shape[-1])
        return (graphdef, make_train_step(cfg, graphdef, ds, mesh),
                jax.jit(start_epoch, donate_argnums=0, out_shardings=replicated(mesh)),
                make_resample_step(cfg, graphdef, ds, mesh)
                if cfg.remedy.resample_every else None,
                make_train_step(cfg, graphdef, ds, mesh, scan_steps=scan)
                if (scan := scan_length(cfg, ds)) else None)

    graphdef, step, reset, resample, scan_fn = _cached(
        _STEPS, (cfg.program_key(evaluator=False), *data), steps)
    evaluate = _cached(_EVALUATORS, (cfg.program_key(), *data),
                       lambda: make_evaluator(cfg, graphdef, ds, mesh))
    return graphdef, step, evaluate, reset, resample, scan_fn


# --------------------------------------------------------------------------- records
def epoch_records(cfg: TrainConfig, epoch: int, k: int, state: TrainState, ev: EvalResult,
                  metrics_fn: MetricsFn | None, **extra) -> list[dict]:
    """One JSON-able record per run for a finished epoch.

    Fields: ``epoch``, ``seed``, ``method``, ``member`` (its group member, ``cfg.runs``;
    the method for a run alone) and ``run`` (its name, ``cfg.run_names``), ``step``
    (global, after the epoch), ``k`` (the run's target),
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
    for i, ((member, seed), name) in enumerate(zip(cfg.runs, cfg.run_names)):
        steps = max(float(host["sums"]["steps"][i]), 1.0)
        run = ev.run(i)
        penalised = cfg.penalised_runs[i]
        coef = float(np.exp(host["log_coef"][i])) if penalised else 0.0
        eval_terms = dict(run.terms)
        eval_terms["loss"] = (eval_terms["recon"] + cfg.beta * eval_terms["kl"]
                              + cfg.sae_weight * eval_terms["sae"]
                              + coef * eval_terms["penalty"])
        rec = {
            "epoch": epoch, "seed": seed, "run": name, "step": int(host["step"][i]),
            "k": cfg.run_k(i, k), "method": config_lib.parse_member(member)[0],
            "member": member, "dataset": cfg.dataset,
            "l1_coef": coef,
            "l0_ema": float(host["l0_ema"][i]) if penalised else None,
            "train": {n: float(host["sums"][n][i]) / steps for n in LOSS_TERMS},
            "eval": eval_terms,
            "dead_fraction": run.dead_fraction(),
            "firing_counts": {tau_key(t): c.tolist() for t, c in zip(run.thresholds, run.counts)}
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


def _epoch_line(records: list[dict]) -> str:
    parts = []
    for r in records:
        dead = r["dead_fraction"].get("0")
        mig = r.get("mig_mean")
        parts.append(f"{r['run'].replace('_', ' ')}: loss {r['eval']['loss']:.2f} recon "
                     f"{r['eval']['recon']:.2f} kl {r['eval']['kl']:.2f} L0 {r['eval']['l0']:.1f}"
                     + (f" dead {100 * dead:.1f}%" if dead is not None else "")
                     + (f" MIG {mig:.3f}" if mig is not None else ""))
    r0 = records[0]
    return (f"epoch {r0['epoch'] + 1} done (k {r0['k']}, {r0['images_per_s']:.0f} img/s): "
            + "; ".join(parts))


# --------------------------------------------------------------------------- restoring
def load_run(out_dir: str | Path, *, devices=None) -> TrainResult:
    """The newest checkpoint of a run directory as a :class:`TrainResult` (no training)."""
    out = Path(out_dir)
    cfg = config_lib.from_dict(read_json(out / CONFIG_FILE, "run config"))
    channels = SPECS[cfg.dataset].observation_shape[-1]
    mesh = make_mesh(devices)
    rep = replicated(mesh)
    with Checkpointer(out / CHECKPOINT_DIR, create=False) as ckpt:
        state, _ = ckpt.restore(abstract_state(cfg, channels, rep))
    return TrainResult(cfg, MetricsLog(out, (), tensorboard=False).records(), state,
                       model_graphdef(cfg, channels), "done", out)
