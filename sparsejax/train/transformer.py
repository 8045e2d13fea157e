"""Training decoder-only transformers on sequence tasks, through the one engine.

:class:`TransformerModel` is the transformer as an engine
:class:`~sparsejax.train.engine.Model`; :func:`make_train_step` builds one jitted program
that runs ``scan_steps`` optimiser steps (``lax.scan``) of S seeds of one shape at once
(:func:`sparsejax.train.seeds.over_seeds`, vmapped by default): each step draws its batch
on the device from ``fold_in(key(seed), step)`` (:mod:`sparsejax.data.sequences`), so a
resumed run computes exactly what an uninterrupted one does. The batch is sharded over
the ``"data"`` mesh, the state replicated and donated.

At every epoch's end :func:`make_evaluator` measures every head on a fixed evaluation batch
(:mod:`sparsejax.interp.heads`): detector scores, entropy, confidence, ground-truth accuracy,
gradient and mean-ablation importance, labels; :func:`train` writes one record per seed and
epoch to ``metrics.jsonl`` and checkpoints through the engine's driver.
"""

from __future__ import annotations

# Shape letters: S seeds trained together, B batch, T positions, V vocabulary, L layers,
# H heads per layer, D width.

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sparsejax.data import sequences
from sparsejax.dir_lock import DirLock, output_path
from sparsejax.interp import heads
from sparsejax.models import transformer as tfm
from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.config import option, resumable_fields
from sparsejax.train.engine import (CHECKPOINT_DIR, Trainer, check_resumable, gradient_step,
                                    refuse_existing_run, run_epochs)
from sparsejax.train.errors import ConfigError
from sparsejax.train.logs import MetricsLog, Progress
from sparsejax.train.mesh import DATA_AXIS, check_batch, make_mesh, replicated
from sparsejax.train.optim import make_optimizer
from sparsejax.train.seeds import SEED_MAPS, over_seeds

HEAD_METRICS = ("previous_token", "duplicate", "induction", "entropy", "confidence",
                "positional", "ground_truth", "gradient_importance", "ablation_importance")
EVAL_KEY_OFFSET = 10_007  # the evaluation batch's key: fold_in(key(this), seed)


@dataclasses.dataclass(frozen=True)
class HeadsTrainConfig:
    """Optimisation of S transformers of one shape, trained together.

    Attributes:
      seeds: one run per seed (initialisation and data).
      batch_size: sequences per step per run; divisible by the device count.
      lr: Adam learning rate.
      epochs: evaluation points (and checkpoints); a resumed run may extend them.
      steps_per_epoch: optimiser steps between evaluations.
      scan_steps: optimiser steps per dispatch (``lax.scan``); divides ``steps_per_epoch``.
      eval_batch: sequences of the fixed evaluation batch.
      seed_map: how seeds share the program (:data:`sparsejax.train.seeds.SEED_MAPS`).
    """

    seeds: tuple[int, ...] = (0,)
    batch_size: int = 32
    lr: float = option(1e-3, resumable=True)
    epochs: int = option(10, affects="nothing")
    steps_per_epoch: int = 100
    scan_steps: int = 50
    eval_batch: int = 64
    seed_map: str = "vmap"

    def __post_init__(self):
        for name in ("batch_size", "epochs", "steps_per_epoch", "scan_steps", "eval_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"HeadsTrainConfig: {name}={v!r} must be an integer >= 1")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"HeadsTrainConfig: seeds={self.seeds} must be distinct, "
                              "at least one")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"HeadsTrainConfig: lr={self.lr} must be a positive finite number")
        if self.steps_per_epoch % self.scan_steps:
            raise ConfigError(f"HeadsTrainConfig: scan_steps={self.scan_steps} must divide "
                              f"steps_per_epoch={self.steps_per_epoch}")
        if self.seed_map not in SEED_MAPS:
            raise ConfigError(f"HeadsTrainConfig: seed_map={self.seed_map!r} must be one of "
                              f"{SEED_MAPS}")


class TransformerState(NamedTuple):
    """The state of S runs (leading axis S on every leaf)."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 [S]
    bad_step: jax.Array  # int32 [S]: the first step with a non-finite loss (-1: none)


class TransformerModel:
    """``init(key) -> params``; ``loss(params, batch, hyper) -> (loss, aux)``.

    The loss is the mean next-token (task-target) cross-entropy over the batch's scored
    positions (``batch.weight``); ``aux`` is ``(in-context loss, in-context accuracy)`` over
    the positions whose target the context determines (``batch.known``). ``hyper`` is unused.
    """

    def __init__(self, cfg: tfm.TransformerConfig, graphdef: nnx.GraphDef | None = None):
        self.cfg = cfg
        self.graphdef = tfm.graphdef(cfg) if graphdef is None else graphdef

    def init(self, key: jax.Array) -> nnx.State:
        return tfm.init(key, self.cfg)[1]

    def apply(self, params, tokens_BxT, head_mask_LxH=None, fill_LxHxTxD=None):
        return tfm.apply(self.graphdef, params, tokens_BxT, head_mask_LxH, fill_LxHxTxD)

    def loss(self, params, batch: sequences.SequenceBatch, hyper=None):
        out = self.apply(params, batch.tokens)
        loss = tfm.token_loss(out.logits, batch.targets, batch.weight)
        ctx_loss = tfm.token_loss(out.logits, batch.targets, batch.known)
        hit = (jnp.argmax(out.logits, -1) == batch.targets) * batch.known
        ctx_acc = jnp.sum(hit) / jnp.maximum(jnp.sum(batch.known), 1)
        return loss, (ctx_loss, ctx_acc)


def optimizer(tcfg: HeadsTrainConfig) -> optax.GradientTransformation:
    return make_optimizer(tcfg.lr)


def init_state(cfg: tfm.TransformerConfig, tcfg: HeadsTrainConfig) -> TransformerState:
    model, tx = TransformerModel(cfg), optimizer(tcfg)

    def one(seed):
        params = model.init(jax.random.key(seed))
        return params, tx.init(params)

    # seed by seed, then stacked: eager ops compile once and are reused for every seed
    params, opt_state = jax.tree.map(lambda *xs: jnp.stack(xs), *[one(s) for s in tcfg.seeds])
    S = len(tcfg.seeds)
    return TransformerState(params, opt_state, jnp.zeros((S,), jnp.int32),
                            jnp.full((S,), -1, jnp.int32))


def _data_keys(seeds_S: jax.Array, step_S: jax.Array) -> jax.Array:
    return jax.vmap(lambda s, t: jax.random.fold_in(jax.random.key(s), t))(seeds_S, step_S)


def make_train_step(cfg: tfm.TransformerConfig, task: sequences.TaskConfig,
                    tcfg: HeadsTrainConfig, mesh: Mesh, graphdef: nnx.GraphDef | None = None):
    """``step(state) -> (state, metrics)``: ``scan_steps`` steps of all S runs, jitted,
    state donated. Metrics (per run, of the last step): ``loss``, ``ctx_loss``,
    ``ctx_acc``, ``bad_step``."""
    check_batch(tcfg.batch_size, mesh)
    model, tx = TransformerModel(cfg, graphdef), optimizer(tcfg)
    S = len(tcfg.seeds)
    seeds_S = jnp.asarray(tcfg.seeds, jnp.uint32)
    rows = NamedSharding(mesh, P(None, DATA_AXIS))  # [S, B, ...]: batch over devices
    rep = replicated(mesh)

    def one_run(params, opt_state, batch):
        params, opt_state, loss, (ctx_loss, ctx_acc) = gradient_step(
            model, tx, params, opt_state, batch, None)
        return params, opt_state, loss, ctx_loss, ctx_acc

    run_all = over_seeds(one_run, S, (0, 0, 0), tcfg.seed_map)

    def one_step(state: TransformerState, _):
        keys_S = _data_keys(seeds_S, state.step)
        batch = jax.vmap(lambda k: sequences.sample(k, tcfg.batch_size, task))(keys_S)
        batch = jax.lax.with_sharding_constraint(batch, rows)
        params, opt_state, loss_S, ctx_loss_S, ctx_acc_S = run_all(
            state.params, state.opt_state, batch)
        bad = jnp.where((state.bad_step < 0) & ~jnp.isfinite(loss_S), state.step,
                        state.bad_step)
        metrics = {"loss": loss_S, "ctx_loss": ctx_loss_S, "ctx_acc": ctx_acc_S,
                   "bad_step": bad}
        return TransformerState(params, opt_state, state.step + 1, bad), metrics

    def step(state):
        state, metrics = jax.lax.scan(one_step, state, length=tcfg.scan_steps)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return jax.jit(step, donate_argnums=0, in_shardings=(rep,), out_shardings=(rep, rep))


def eval_batch(task: sequences.TaskConfig, tcfg: HeadsTrainConfig) -> sequences.SequenceBatch:
    """The fixed evaluation batch, ``[S, B, T]`` (one per run, from its seed)."""
    def one(seed):
        key = jax.random.fold_in(jax.random.key(EVAL_KEY_OFFSET), seed)
        return sequences.sample(key, tcfg.eval_batch, task)

    return jax.vmap(one)(jnp.asarray(tcfg.seeds, jnp.uint32))


def head_metrics(model: TransformerModel, params, batch: sequences.SequenceBatch) -> dict:
    """Every head's metrics ``[L, H]`` (:data:`HEAD_METRICS`, ``label``), the in-context
    loss, and the patterns of the batch's first sequence ``[L, H, T, T]``, of one run.

    Importance uses the in-context loss (positions whose target the context determines).
    A masked head writes ``m o_h + (1 - m) mean(o_h)`` (its mean over the batch, per
    position). Ablation importance: the loss increase at ``m = 0`` for that head alone.
    Gradient importance: Michel et al. (2019)'s ``E_x |dL(x)/dm|`` over the sequences at
    ``m = 1`` (one backward pass with a mask per sequence), here the first-order estimate
    of the mean-ablation change rather than of zeroing the head.
    """
    cfg = model.cfg
    out = model.apply(params, batch.tokens)
    scores = heads.pooled_scores(out.patterns, batch.tokens, batch.attend)
    fill_LxHxTxD = jnp.mean(out.head_out, 0)

    def loss_of_mask(mask_LxH):
        o = model.apply(params, batch.tokens, mask_LxH, fill_LxHxTxD)
        return tfm.token_loss(o.logits, batch.targets, batch.known)

    def summed_sequence_losses(mask_BxLxH):  # sequence b's loss depends on mask b only
        o = model.apply(params, batch.tokens, mask_BxLxH, fill_LxHxTxD)
        logp = jax.nn.log_softmax(o.logits, -1)
        nll_BxT = -jnp.take_along_axis(logp, jnp.maximum(batch.targets, 0)[..., None], -1)[
            ..., 0]
        w_BxT = batch.known
        return jnp.sum(jnp.sum(nll_BxT * w_BxT, -1) / jnp.maximum(jnp.sum(w_BxT, -1), 1))

    B = batch.tokens.shape[0]
    grad_imp = jnp.mean(heads.gradient_importance(summed_sequence_losses,
                                                  (B, cfg.layers, cfg.heads)), 0)
    abl = heads.ablation_importance(loss_of_mask, (cfg.layers, cfg.heads))
    scores = {**scores, "gradient_importance": grad_imp, "ablation_importance": abl}
    return {**scores, "label": heads.label_heads(scores),
            "ctx_loss": tfm.token_loss(out.logits, batch.targets, batch.known),
            "example_patterns": out.patterns[0]}


def make_evaluator(cfg: tfm.TransformerConfig, task: sequences.TaskConfig,
                   tcfg: HeadsTrainConfig, mesh: Mesh, graphdef: nnx.GraphDef | None = None):
    """``evaluate(params) -> dict`` of per-run arrays ``[S, ...]`` (:func:`head_metrics`)
    on the fixed evaluation batch, jitted (the batch is built once, on the device)."""
    model = TransformerModel(cfg, graphdef)
    rep = replicated(mesh)
    batch = jax.device_put(eval_batch(task, tcfg), rep)
    fn = over_seeds(lambda p, b: head_metrics(model, p, b), len(tcfg.seeds), (0, 0),
                    tcfg.seed_map)
    jitted = jax.jit(fn, in_shardings=(rep, rep), out_shardings=rep)
    return lambda params: jitted(params, batch)


class HeadsResult(NamedTuple):
    """What :func:`train` returns: the final state, every evaluation record (from
    ``metrics.jsonl``, one per seed and epoch), the final evaluation (arrays ``[S, ...]``),
    ``"done"`` or ``"interrupted"``, and the global step this process started from."""

    state: TransformerState
    records: list[dict]
    final: dict
    status: str
    start_step: int


def _json(x):
    return np.asarray(x).round(6).tolist()


@functools.lru_cache(maxsize=8)
def _programs(cfg, task, tcfg: HeadsTrainConfig, mesh: Mesh):
    gdef = tfm.graphdef(cfg)
    return (make_train_step(cfg, task, tcfg, mesh, gdef),
            make_evaluator(cfg, task, tcfg, mesh, gdef))


def programs(cfg: tfm.TransformerConfig, task: sequences.TaskConfig, tcfg: HeadsTrainConfig,
             mesh: Mesh):
    """``(train step, evaluator)``, built once per process for each program: runs that
    differ only in their length (``epochs``) share them (a resumed, extended run does not
    compile again)."""
    return _programs(cfg, task, dataclasses.replace(tcfg, epochs=1), mesh)


class HeadsTrainer(Trainer):
    """The transformer's side of :func:`sparsejax.train.engine.run_epochs`."""

    def __init__(self, cfg, task, tcfg: HeadsTrainConfig, mesh: Mesh, log: MetricsLog,
                 step: int, config: dict, name: str):
        self.tcfg, self.log_file, self.config = tcfg, log, config
        self.epochs = tcfg.epochs
        self.steps_per_epoch = tcfg.steps_per_epoch // tcfg.scan_steps  # dispatches
        self.log_every = max(1, self.steps_per_epoch // 4)
        self.run_names = [f"{name} seed {s}" for s in tcfg.seeds]
        self.step_fn, self.evaluate = programs(cfg, task, tcfg, mesh)
        self.step_count = step
        self.last_train: dict = {}

    def step(self, state, epoch, step_in_epoch):
        state, metrics = self.step_fn(state)
        self.step_count += self.tcfg.scan_steps
        return state, metrics

    def log(self, done, epoch, metrics):
        self.last_train = {k: np.asarray(metrics[k]) for k in ("loss", "ctx_loss", "ctx_acc")}
        return (f"epoch {epoch + 1}/{self.epochs} loss {self.last_train['loss'].mean():.3f} "
                f"ctx acc {self.last_train['ctx_acc'].mean():.3f}")

    def end_epoch(self, state, epoch, timing):
        ev = jax.device_get(self.evaluate(state.params))
        step = (epoch + 1) * self.tcfg.steps_per_epoch
        recs = []
        for i, seed in enumerate(self.tcfg.seeds):
            rec = {"epoch": epoch, "step": step, "seed": seed,
                   "train": {k: float(v[i]) for k, v in self.last_train.items()},
                   "ctx_loss": float(ev["ctx_loss"][i]),
                   "heads": {k: _json(ev[k][i]) for k in (*HEAD_METRICS, "label")}}
            recs.append(rec)
        self.log_file.write(recs)
        return state, recs


def abstract_state(cfg, tcfg, mesh: Mesh):
    rep = replicated(mesh)
    abstract = jax.eval_shape(lambda: init_state(cfg, tcfg))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                        abstract)


def train(cfg: tfm.TransformerConfig, task: sequences.TaskConfig, tcfg: HeadsTrainConfig,
          out_dir: str | Path, *, resume: bool = False, mesh: Mesh | None = None,
          progress: bool = True, config: Mapping[str, Any] | None = None,
          free: tuple[str, ...] | None = None, name: str = "transformer") -> HeadsResult:
    """Train ``len(tcfg.seeds)`` transformers of shape ``cfg`` on ``task`` together.

    Writes ``out_dir/checkpoints/`` (orbax, after every epoch and at an interrupt) and
    ``out_dir/metrics.jsonl`` (one record per seed and epoch: train metrics and every
    head's metrics). ``resume`` continues from the newest checkpoint and reproduces the
    uninterrupted run; ``config`` (default: the three configs) is stored with each
    checkpoint and checked on resume, where only the fields ``free`` (default: those of
    :class:`HeadsTrainConfig` marked resumable) may differ.
    """
    mesh = make_mesh() if mesh is None else mesh
    check_batch(tcfg.batch_size, mesh)
    if config is None:
        config = {"model": dataclasses.asdict(cfg), "task": dataclasses.asdict(task),
                  **dataclasses.asdict(tcfg)}
        config["seeds"] = list(tcfg.seeds)
        free = resumable_fields(HeadsTrainConfig)
    config = json_ready(config)
    out = output_path(out_dir)
    with DirLock(out, enabled=jax.process_index() == 0):
        refuse_existing_run(out, resume)
        ckpt = Checkpointer(out / CHECKPOINT_DIR)
        log = MetricsLog(out, (), tensorboard=False)
        try:
            epoch = step_in_epoch = 0
            if resume and ckpt.latest_step() is not None:
                check_resumable(ckpt.metadata()["config"], config, free or ())
                state, meta = ckpt.restore(abstract_state(cfg, tcfg, mesh))
                epoch, step_in_epoch = int(meta["epoch"]), int(meta["step_in_epoch"])
            else:
                state = jax.device_put(init_state(cfg, tcfg), replicated(mesh))
            dispatches = tcfg.steps_per_epoch // tcfg.scan_steps
            start = (epoch * dispatches + step_in_epoch) * tcfg.scan_steps
            log.truncate(lambda r: r["step"] <= start)
            trainer = HeadsTrainer(cfg, task, tcfg, mesh, log, start, config, name)
            bar = Progress(tcfg.epochs * dispatches, epoch * dispatches + step_in_epoch,
                           tcfg.batch_size * tcfg.scan_steps * len(tcfg.seeds), unit="seq",
                           desc=name, enabled=progress)
            state, status = run_epochs(trainer, state, ckpt, bar, epoch=epoch,
                                       step_in_epoch=step_in_epoch)
            bar.close()
            final = jax.device_get(trainer.evaluate(state.params))
            return HeadsResult(state, log.records(), final, status, start)
        finally:
            log.close()
            ckpt.close()


def json_ready(config: Mapping[str, Any]) -> dict:
    """``config`` as it reads back from JSON (tuples as lists), so resume checks compare
    like with like."""
    import json

    return json.loads(json.dumps(dict(config)))
