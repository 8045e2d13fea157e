"""Training a standalone SAE on an array of activation vectors, through the one engine.

:class:`SAEModel` is the SAE as an engine :class:`~sparsejax.train.engine.Model`; its step
makes the engine's :func:`~sparsejax.train.engine.gradient_step`, and :func:`train` runs
epochs with the engine's driver (orbax checkpoints, resume, progress, divergence check,
metrics log). The step is one jitted program over the 1-D ``"data"`` mesh: the batch is sharded over
devices, the state replicated and donated. Inside, ``shard_map`` runs the per-device part
(forward, backward through the sparse ops, whose scatters and Pallas kernels want local
arrays): every loss is a sum over vectors divided by a global constant, so the local
gradients add up with one ``psum`` to the exact full-batch gradient. (Taking the gradient
inside shard_map with ``check_vma=False`` means no implicit psum is inserted for the
replicated parameters, so this psum is the only one: no pmean double counting.)

Loss (all ratios of sums over the global batch; the denominators depend on data only):
``FVU = sum ||x - x_hat||^2 / sum ||x - mean x||^2``, plus ``aux_coef`` x AuxK's normalised
error for TopK, ``l1_coef x sum_b sum_n z_bn / sum_b ||x_b - mean x||`` for ReLU, or
``l0_coef x`` the mean L0 (and ``preact_coef x`` the dead latents' gap to their thresholds)
for JumpReLU. BatchTopK's cut is the batch's, across devices (:func:`sparsejax.ops.batch_topk`:
a radix select with one scalar ``psum`` per bit), and its evaluation threshold is updated
after each step from the step's code, over every device.
After each Adam step the decoder rows are renormalised, and the gradient component along
each row is removed before the step (Gao et al.), so the norm constraint and Adam agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sparsejax.dir_lock import DirLock, output_path
from sparsejax.models import sae, sparse_layer
from sparsejax.sparsity import remedies
from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.config import option, resumable_fields
from sparsejax.train.engine import (CHECKPOINT_DIR, Trainer, check_resumable, gradient_step,
                                    refuse_existing_run, run_epochs)
from sparsejax.train.errors import ConfigError
from sparsejax.train.logs import MetricsLog, Progress
from sparsejax.train.mesh import DATA_AXIS, check_batch, global_array, make_mesh, replicated
from sparsejax.train.optim import make_optimizer

# Shape letters: B the global batch, b one device's part of it, D the activation width,
# N the SAE's latents.

METRIC_NAMES = ("loss", "fvu", "aux_loss", "l0", "dead_fraction")


@dataclasses.dataclass(frozen=True)
class SAETrainConfig:
    """Optimisation of an SAE.

    Attributes:
      batch_size: global batch (vectors per step); divisible by the device count.
      lr: Adam learning rate.
      epochs: passes over the activation array (the remainder batch is dropped).
      dead_after: steps without firing after which a latent counts as dead (AuxK, resampling).
      resample_every: Anthropic resampling of dead latents every this many steps (0: off).
      log_every: steps between metric fetches (the only host syncs).
      seed: initialisation and shuffling.
    """

    batch_size: int = 4096
    lr: float = option(4e-4, resumable=True)
    epochs: int = option(1, affects="nothing")
    dead_after: int = 200
    resample_every: int = 0
    log_every: int = option(50, affects="nothing")
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "epochs", "dead_after", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SAETrainConfig: {name}={getattr(self, name)} must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"SAETrainConfig: lr={self.lr} must be a positive finite number")
        if self.resample_every < 0:
            raise ConfigError(
                f"SAETrainConfig: resample_every={self.resample_every} must be >= 0")


class SAEState(NamedTuple):
    params: sae.SAEParams
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar
    last_fired: jax.Array  # int32 [N]: the last step at which each latent fired
    bad_step: jax.Array  # int32 scalar: the first step with a non-finite loss (-1: none)


def optimizer(tcfg: SAETrainConfig) -> optax.GradientTransformation:
    return make_optimizer(tcfg.lr, eps=6.25e-10)  # Gao et al.'s epsilon


class _BatchStats(NamedTuple):
    """Global statistics of a batch (data only, so constants of the loss)."""

    mean_D: jax.Array
    var: jax.Array  # sum of squared deviations from the mean
    absdev: jax.Array  # sum of the deviations' norms


def _batch_stats(x_bxD) -> _BatchStats:
    n = lax.psum(x_bxD.shape[0], DATA_AXIS)
    mean_D = lax.psum(jnp.sum(x_bxD, 0), DATA_AXIS) / n
    dev_bxD = x_bxD - mean_D
    var = lax.psum(jnp.sum(dev_bxD**2), DATA_AXIS)
    absdev = lax.psum(jnp.sum(jnp.linalg.norm(dev_bxD, axis=-1)), DATA_AXIS)
    return _BatchStats(mean_D, jnp.maximum(var, 1e-12), jnp.maximum(absdev, 1e-12))


class SAEModel:
    """The SAE as an engine model, for use inside ``shard_map`` over :data:`DATA_AXIS`.

    ``loss(params, (x_bxD, dead_N, stats), k)`` returns this device's share (local sums
    over global constants), so the ``psum`` of the gradients is the exact full-batch
    gradient. Decoder rows stay at unit norm: the gradient component along each row is
    removed before the optimiser and the rows are renormalised after it (Gao et al.).
    """

    def __init__(self, cfg: sae.SAEConfig):
        self.cfg = cfg

    def init(self, key: jax.Array, b_dec: jax.Array | None = None) -> sae.SAEParams:
        return sae.init_params(key, self.cfg, b_dec)

    def loss(self, params: sae.SAEParams, batch, k):
        x_bxD, dead_N, stats = batch
        cfg = self.cfg
        if cfg.activation == "jumprelu":
            return self._jump_loss(params, x_bxD, dead_N, stats)
        out = sae.forward(params, x_bxD, k, cfg, dead_N, train=True, axis_name=DATA_AXIS)
        fvu = jnp.sum((x_bxD - out.recon) ** 2) / stats.var
        loss, aux = fvu, jnp.zeros(())
        if cfg.activation == "relu":
            loss = loss + cfg.l1_coef * jnp.sum(out.code) / stats.absdev
        elif cfg.k_aux:
            # AuxK's normaliser is a global sum of a detached quantity: psum it (no gradient).
            e_bxD = lax.stop_gradient(x_bxD - out.recon)
            e_mean_D = (lax.psum(jnp.sum(e_bxD, 0), DATA_AXIS)
                        / lax.psum(x_bxD.shape[0], DATA_AXIS))
            s = remedies.auxk_sums(params.W_dec, x_bxD, out.recon, out.code.aux_values,
                                   out.code.aux_indices, e_mean_D)
            aux = s.sse / jnp.maximum(lax.psum(s.centred, DATA_AXIS), 1e-12)
            aux = jnp.where(jnp.any(dead_N), aux, 0.0)  # no dead latents: no AuxK term
            loss = loss + cfg.aux_coef * aux
        return loss, (fvu, aux, out)

    def _jump_loss(self, params: sae.SAEParams, x_bxD, dead_N, stats):
        """FVU + ``l0_coef`` x mean L0 (straight-through to theta, Rajamanoharan et al.
        2024) + ``preact_coef`` x the dead latents' gap to their thresholds; ``aux`` reports
        the pre-activation term."""
        cfg = self.cfg
        pre_bxN = sae.preactivations(params, x_bxD)
        theta_N = sae.jump_threshold(params, cfg)
        code = sparse_layer.jump_relu(pre_bxN, theta_N, cfg.jump_bandwidth)
        out = sae.SAEOut(code, sae.decode(params, code))
        n_vectors = lax.psum(x_bxD.shape[0], DATA_AXIS)
        fvu = jnp.sum((x_bxD - out.recon) ** 2) / stats.var
        l0 = jnp.sum(sparse_layer.jump_step(pre_bxN, theta_N, cfg.jump_bandwidth)) / n_vectors
        # Anthropic (2025): a dead latent's pre-activation is pulled up to its threshold
        # (the decoder rows have unit norm here, so the norm factor is 1), per vector, in
        # units of the data's mean deviation norm like the L1 term
        gap = jnp.sum(jax.nn.relu(theta_N - pre_bxN) * dead_N) / stats.absdev
        loss = fvu + cfg.l0_coef * l0 + cfg.preact_coef * gap
        return loss, (fvu, gap, out)

    def after_update(self, params: sae.SAEParams, code) -> sae.SAEParams:
        """BatchTopK: the evaluation threshold's moving average after this step's code
        (over every shard); the other activations' parameters come back unchanged."""
        if self.cfg.activation != "batchtopk":
            return params
        return params._replace(threshold=sparse_layer.ema_threshold(
            params.threshold, code, self.cfg.batchtopk_decay, axis_name=DATA_AXIS))

    def constrain_grads(self, grads: sae.SAEParams, params: sae.SAEParams) -> sae.SAEParams:
        g_NxD, W_NxD = grads.W_dec, params.W_dec
        return grads._replace(W_dec=g_NxD - jnp.sum(g_NxD * W_NxD, -1, keepdims=True) * W_NxD)

    def constrain_params(self, params: sae.SAEParams) -> sae.SAEParams:
        return params._replace(W_dec=sae.unit_rows(params.W_dec))


def init_state(key: jax.Array, cfg: sae.SAEConfig, tcfg: SAETrainConfig,
               b_dec: jax.Array | None = None) -> SAEState:
    params = SAEModel(cfg).init(key, b_dec)
    return SAEState(params=params, opt_state=optimizer(tcfg).init(params),
                    step=jnp.zeros((), jnp.int32),
                    last_fired=jnp.zeros((cfg.n_latents,), jnp.int32),
                    bad_step=jnp.full((), -1, jnp.int32))


def make_train_step(cfg: sae.SAEConfig, tcfg: SAETrainConfig, mesh: Mesh):
    """``step(state, x [B, d], k) -> (state, metrics)``, jitted, state donated.

    ``x`` is sharded over the mesh's ``"data"`` axis; k is a traced int32 scalar (changing
    it does not recompile). Metrics: :data:`METRIC_NAMES` and ``bad_step``.
    """
    model, tx = SAEModel(cfg), optimizer(tcfg)
    n = cfg.n_latents

    def local_step(state: SAEState, x_bxD, k):
        dead_N = remedies.dead_mask(state.last_fired, state.step, tcfg.dead_after)
        batch = (x_bxD, dead_N, _batch_stats(x_bxD))
        params, opt_state, loss, (fvu, aux, out) = gradient_step(
            model, tx, state.params, state.opt_state, batch, k, axis_name=DATA_AXIS)
        params = model.after_update(params, out.code)
        fvu, aux = lax.psum((fvu, aux), DATA_AXIS)
        fired_N = lax.pmax(sae.fired(out.code, n), DATA_AXIS)
        step = state.step + 1
        last_fired = jnp.where(fired_N, step, state.last_fired)
        l0 = (lax.psum(jnp.sum(sae.l0(out.code)), DATA_AXIS)
              / lax.psum(x_bxD.shape[0], DATA_AXIS))
        bad = jnp.where((state.bad_step < 0) & ~jnp.isfinite(loss), state.step, state.bad_step)
        metrics = {"loss": loss, "fvu": fvu, "aux_loss": aux, "l0": l0,
                   "dead_fraction": jnp.mean(dead_N.astype(jnp.float32)), "bad_step": bad}
        return SAEState(params, opt_state, step, last_fired, bad), metrics

    # check_vma=False: gradients are taken per shard and summed by the one explicit psum.
    sharded = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(DATA_AXIS, None), P()),
                            out_specs=(P(), P()), check_vma=False)
    rep, rows = replicated(mesh), NamedSharding(mesh, P(DATA_AXIS, None))

    def step(state, x_BxD, k):  # a no-op for inputs already laid out as declared
        constrain = jax.lax.with_sharding_constraint
        return sharded(constrain(state, rep), constrain(x_BxD, rows), constrain(k, rep))

    return jax.jit(step, donate_argnums=(0,), in_shardings=(rep, rows, rep),
                   out_shardings=(rep, rep))


def make_resample(cfg: sae.SAEConfig, tcfg: SAETrainConfig, mesh: Mesh):
    """``resample(state, x, key) -> state``: Anthropic resampling of the dead latents."""
    tx = optimizer(tcfg)

    def resample(state: SAEState, x_BxD, key):
        dead_N = remedies.dead_mask(state.last_fired, state.step, tcfg.dead_after)
        recon = sae.forward(state.params, x_BxD, cfg.k, cfg).recon
        params, opt_state = remedies.resample_dead(key, state.params, state.opt_state,
                                                   tx, dead_N, x_BxD, recon)
        # A resampled latent gets a fresh dead_after window before it counts as dead again.
        last_fired = jnp.where(dead_N, state.step, state.last_fired)
        return state._replace(params=params, opt_state=opt_state, last_fired=last_fired)

    rep = replicated(mesh)  # rare: the batch is gathered, all replicated
    return jax.jit(resample, donate_argnums=(0,), in_shardings=rep, out_shardings=rep)


class History(NamedTuple):
    steps: list[int]
    metrics: list[dict[str, float]]


class SAEResult(NamedTuple):
    """What :func:`train` returns: the final state, every logged metric (``history``),
    ``"done"`` or ``"interrupted"``, and the global step this process started from."""

    state: SAEState
    history: History
    status: str
    start_step: int


class SAETrainer(Trainer):
    """The SAE's side of :func:`sparsejax.train.engine.run_epochs`: shuffled host batches
    (each epoch's order depends only on (seed, epoch)), resampling, metric records."""

    def __init__(self, acts_MxD: np.ndarray, cfg: sae.SAEConfig, tcfg: SAETrainConfig,
                 mesh: Mesh, log: MetricsLog, k: int, step: int, config: dict):
        self.acts, self.tcfg, self.log_file, self.config = acts_MxD, tcfg, log, config
        self.epochs, self.log_every = tcfg.epochs, tcfg.log_every
        self.steps_per_epoch = acts_MxD.shape[0] // tcfg.batch_size
        self.run_names = [f"seed {tcfg.seed}"]
        self.step_fn = make_train_step(cfg, tcfg, mesh)
        self.resample_fn = make_resample(cfg, tcfg, mesh) if tcfg.resample_every else None
        self.k = jax.device_put(jnp.int32(k), replicated(mesh))
        self.rows, self.rep = NamedSharding(mesh, P(DATA_AXIS, None)), replicated(mesh)
        self.key = jax.random.key(tcfg.seed + 1)  # folded with the step: resumable
        self.step_count = step  # host copy of the global step
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation)

    def step(self, state: SAEState, epoch: int, step_in_epoch: int):
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.tcfg.seed, epoch])
            self._order = (epoch, rng.permutation(self.acts.shape[0]))
        b = self.tcfg.batch_size
        idx = np.sort(self._order[1][step_in_epoch * b:(step_in_epoch + 1) * b])
        x_BxD = self.acts[idx]
        state, metrics = self.step_fn(state, global_array(x_BxD, self.rows), self.k)
        self.step_count += 1
        if self.resample_fn is not None and self.step_count % self.tcfg.resample_every == 0:
            state = self.resample_fn(state, global_array(x_BxD, self.rep),
                                     jax.random.fold_in(self.key, self.step_count))
        return state, metrics

    def log(self, done: int, epoch: int, metrics: dict) -> str:
        m = {name: float(metrics[name]) for name in METRIC_NAMES}
        self.log_file.write([{"epoch": epoch, "step": done, "seed": self.tcfg.seed, **m}])
        return (f"epoch {epoch + 1}/{self.epochs} fvu {m['fvu']:.4f} L0 {m['l0']:.1f} "
                f"dead {m['dead_fraction']:.3f}")



def train(acts: np.ndarray, cfg: sae.SAEConfig, tcfg: SAETrainConfig, out_dir: str | Path, *,
          resume: bool = False, mesh: Mesh | None = None, k: int | None = None,
          progress: bool = True, config: Mapping[str, Any] | None = None,
          free: tuple[str, ...] | None = None) -> SAEResult:
    """Train an SAE on ``acts [M, d]`` (host array), shuffled each epoch.

    Writes ``out_dir/checkpoints/`` (orbax, after every epoch and at an interrupt) and
    ``out_dir/metrics.jsonl`` (one record every ``log_every`` steps and at each epoch's
    end). ``resume`` continues from the newest checkpoint and reproduces the uninterrupted
    run; ``config`` (default: the SAE and training configs) is stored with each checkpoint
    and checked on resume, where only the fields ``free`` (default: those of
    :class:`SAETrainConfig` marked resumable: ``epochs``, ``log_every``, ``lr``) may differ.

    Raises ``ValueError`` for inputs that do not fit, :class:`TrainingDiverged` naming the
    step when the loss stops being finite.
    """
    acts = np.asarray(acts, np.float32)
    if acts.ndim != 2 or acts.shape[1] != cfg.d_in:
        raise ValueError(f"train: acts must have shape [M, d_in={cfg.d_in}], got {acts.shape}")
    mesh = make_mesh() if mesh is None else mesh
    check_batch(tcfg.batch_size, mesh)
    steps_per_epoch = acts.shape[0] // tcfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train: {acts.shape[0]} vectors are fewer than one batch "
                         f"({tcfg.batch_size})")
    if config is None:
        config = {"sae": dataclasses.asdict(cfg), **dataclasses.asdict(tcfg)}
        free = resumable_fields(SAETrainConfig)
    config = dict(config)
    out = output_path(out_dir)
    with DirLock(out, enabled=jax.process_index() == 0):
        refuse_existing_run(out, resume)
        rep = replicated(mesh)
        ckpt = Checkpointer(out / CHECKPOINT_DIR)
        log = MetricsLog(out, (), tensorboard=False)
        try:
            epoch = step_in_epoch = 0
            if resume and ckpt.latest_step() is not None:
                check_resumable(ckpt.metadata()["config"], config, free or ())
                abstract = jax.eval_shape(lambda: init_state(jax.random.key(0), cfg, tcfg))
                state, meta = ckpt.restore(jax.tree.map(
                    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), abstract))
                epoch, step_in_epoch = int(meta["epoch"]), int(meta["step_in_epoch"])
            else:  # b_dec starts at the data mean (of a sample), as in SAE practice
                rng = np.random.default_rng(tcfg.seed)
                sample = rng.choice(acts.shape[0], min(acts.shape[0], 65536), replace=False)
                state = jax.device_put(init_state(jax.random.key(tcfg.seed), cfg, tcfg,
                                                  jnp.asarray(acts[sample].mean(0))), rep)
            start = epoch * steps_per_epoch + step_in_epoch
            log.truncate(lambda r: r["step"] <= start)
            trainer = SAETrainer(acts, cfg, tcfg, mesh, log, cfg.k if k is None else k, start,
                                 config)
            bar = Progress(tcfg.epochs * steps_per_epoch, start, tcfg.batch_size, unit="vec",
                           desc="sae", enabled=progress)
            state, status = run_epochs(trainer, state, ckpt, bar, epoch=epoch,
                                       step_in_epoch=step_in_epoch)
            bar.close()
            records = log.records()
            history = History([r["step"] for r in records],
                              [{n: r[n] for n in METRIC_NAMES} for r in records])
            return SAEResult(state, history, status, start)
        finally:
            log.close()
            ckpt.close()
