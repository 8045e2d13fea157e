"""Training a standalone SAE on an array of activation vectors, data-parallel over a mesh.

The step is one jitted program over a 1-D ``("data",)`` mesh: the batch is sharded over
devices, the state replicated and donated. Inside, ``shard_map`` runs the per-device part
(forward, backward through the sparse ops, whose scatters and Pallas kernels want local
arrays): every loss is a sum over vectors divided by a global constant, so the local
gradients add up with one ``psum`` to the exact full-batch gradient. (Taking the gradient
inside shard_map with ``check_vma=False`` means no implicit psum is inserted for the
replicated parameters, so this psum is the only one: no pmean double counting.)

Loss (all ratios of sums over the global batch; the denominators depend on data only):
``FVU = sum ||x - x_hat||^2 / sum ||x - mean x||^2``, plus ``aux_coef`` x AuxK's normalised
error for TopK, or ``l1_coef x sum_b sum_n z_bn / sum_b ||x_b - mean x||`` for ReLU.
After each Adam step the decoder rows are renormalised, and the gradient component along
each row is removed before the step (Gao et al.), so the norm constraint and Adam agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sparsejax.models import sae
from sparsejax.sparsity import remedies

AXIS = "data"


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
    lr: float = 4e-4
    epochs: int = 1
    dead_after: int = 200
    resample_every: int = 0
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "epochs", "dead_after", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"SAETrainConfig: {name}={getattr(self, name)} must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"SAETrainConfig: lr={self.lr} must be a positive finite number")
        if self.resample_every < 0:
            raise ValueError(f"SAETrainConfig: resample_every={self.resample_every} must be >= 0")


class SAEState(NamedTuple):
    params: sae.SAEParams
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar
    last_fired: jax.Array  # int32 [N]: the last step at which each latent fired


def make_optimizer(cfg: SAETrainConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.lr, eps=6.25e-10)  # Gao et al.'s epsilon


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), (AXIS,), devices=devices)


def init_state(key: jax.Array, cfg: sae.SAEConfig, tcfg: SAETrainConfig,
               b_dec: jax.Array | None = None) -> SAEState:
    params = sae.init_params(key, cfg, b_dec)
    return SAEState(params=params, opt_state=make_optimizer(tcfg).init(params),
                    step=jnp.zeros((), jnp.int32),
                    last_fired=jnp.zeros((cfg.n_latents,), jnp.int32))


def _losses(params, x_bxD, k, dead_N, cfg: sae.SAEConfig, x_mean_D, x_var, x_absdev):
    """Local sums / global constants: their psum over shards is the global loss."""
    out = sae.forward(params, x_bxD, k, cfg, dead_N)
    sse = jnp.sum((x_bxD - out.recon) ** 2)
    fvu = sse / x_var
    loss, aux = fvu, jnp.zeros(())
    if cfg.activation == "relu":
        loss = loss + cfg.l1_coef * jnp.sum(out.code) / x_absdev
    elif cfg.k_aux:
        # AuxK's normaliser is a global sum of a detached quantity: psum it (no gradient).
        e_bxD = lax.stop_gradient(x_bxD - out.recon)
        e_mean_D = lax.psum(jnp.sum(e_bxD, 0), AXIS) / lax.psum(x_bxD.shape[0], AXIS)
        s = remedies.auxk_sums(params, x_bxD, out.recon, out.code.aux_values,
                               out.code.aux_indices, e_mean_D)
        aux = s.sse / jnp.maximum(lax.psum(s.centred, AXIS), 1e-12)
        aux = jnp.where(jnp.any(dead_N), aux, 0.0)  # no dead latents: no AuxK term
        loss = loss + cfg.aux_coef * aux
    return loss, (fvu, aux, out)


def _batch_stats(x_bxD):
    """Global mean, sum of squared deviations and sum of deviation norms (data only)."""
    n = lax.psum(x_bxD.shape[0], AXIS)
    mean_D = lax.psum(jnp.sum(x_bxD, 0), AXIS) / n
    dev_bxD = x_bxD - mean_D
    var = lax.psum(jnp.sum(dev_bxD**2), AXIS)
    absdev = lax.psum(jnp.sum(jnp.linalg.norm(dev_bxD, axis=-1)), AXIS)
    return mean_D, jnp.maximum(var, 1e-12), jnp.maximum(absdev, 1e-12)


def _remove_parallel(g_NxD, W_NxD):
    """Drop the component of each decoder-row gradient along the (unit) row itself."""
    return g_NxD - jnp.sum(g_NxD * W_NxD, -1, keepdims=True) * W_NxD


def make_train_step(cfg: sae.SAEConfig, tcfg: SAETrainConfig, mesh: Mesh) -> Callable:
    """``step(state, x [B, d], k) -> (state, metrics)``, jitted, state donated.

    ``x`` is sharded over the mesh's ``"data"`` axis; k is a traced int32 scalar (changing
    it does not recompile).
    """
    optimizer = make_optimizer(tcfg)
    n = cfg.n_latents

    def local_step(state: SAEState, x_bxD, k):
        dead_N = remedies.dead_mask(state.last_fired, state.step, tcfg.dead_after)
        stats = _batch_stats(x_bxD)
        grad_fn = jax.value_and_grad(_losses, has_aux=True)
        (loss, (fvu, aux, out)), grads = grad_fn(state.params, x_bxD, k, dead_N, cfg, *stats)
        grads, loss, fvu, aux = lax.psum((grads, loss, fvu, aux), AXIS)
        grads = grads._replace(W_dec=_remove_parallel(grads.W_dec, state.params.W_dec))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = params._replace(W_dec=sae.unit_rows(params.W_dec))
        fired_N = lax.pmax(sae.fired(out.code, n), AXIS)
        step = state.step + 1
        last_fired = jnp.where(fired_N, step, state.last_fired)
        l0 = lax.psum(jnp.sum(sae.l0(out.code)), AXIS) / lax.psum(x_bxD.shape[0], AXIS)
        metrics = {"loss": loss, "fvu": fvu, "aux_loss": aux, "l0": l0,
                   "dead_fraction": jnp.mean(dead_N.astype(jnp.float32))}
        return SAEState(params, opt_state, step, last_fired), metrics

    # check_vma=False: gradients are taken per shard and summed by the one explicit psum.
    sharded = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(AXIS, None), P()),
                            out_specs=(P(), P()), check_vma=False)
    replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS, None))

    def step(state, x_BxD, k):  # reshard: a no-op for inputs already laid out as declared
        return sharded(jax.reshard(state, replicated), jax.reshard(x_BxD, rows),
                       jax.reshard(k, replicated))

    return jax.jit(step, donate_argnums=(0,), in_shardings=(replicated, rows, replicated),
                   out_shardings=(replicated, replicated))


def make_resample(cfg: sae.SAEConfig, tcfg: SAETrainConfig, mesh: Mesh) -> Callable:
    """``resample(state, x, key) -> state``: Anthropic resampling of the dead latents."""
    optimizer = make_optimizer(tcfg)

    def resample(state: SAEState, x_BxD, key):
        dead_N = remedies.dead_mask(state.last_fired, state.step, tcfg.dead_after)
        recon = sae.forward(state.params, x_BxD, cfg.k, cfg).recon
        params, opt_state = remedies.resample_dead(key, state.params, state.opt_state,
                                                   optimizer, dead_N, x_BxD, recon)
        # A resampled latent gets a fresh dead_after window before it counts as dead again.
        last_fired = jnp.where(dead_N, state.step, state.last_fired)
        return SAEState(params, opt_state, state.step, last_fired)

    replicated = NamedSharding(mesh, P())  # rare: the batch is gathered, all replicated
    return jax.jit(resample, donate_argnums=(0,), in_shardings=replicated,
                   out_shardings=replicated)


class History(NamedTuple):
    steps: list[int]
    metrics: list[dict[str, float]]


def train(acts: np.ndarray, cfg: sae.SAEConfig, tcfg: SAETrainConfig, *,
          mesh: Mesh | None = None, k: int | None = None, progress: bool = True,
          state: SAEState | None = None, start_epoch: int = 0,
          on_epoch_end: Callable[[int, SAEState, History], None] | None = None,
          ) -> tuple[SAEState, History]:
    """Train an SAE on ``acts [M, d]`` (host array), shuffled each epoch.

    Each epoch's order depends only on (seed, epoch), so a run resumed with the state
    saved after epoch e (``state=..., start_epoch=e + 1``) sees the data a straight run
    would. ``on_epoch_end(epoch, state, history)`` runs after every epoch (checkpoints).

    Returns the final state and the metrics fetched every ``log_every`` steps (and at
    each epoch's end). Raises ``FloatingPointError`` naming the step when the loss stops
    being finite.
    """
    from tqdm.auto import tqdm

    acts = np.asarray(acts, np.float32)
    if acts.ndim != 2 or acts.shape[1] != cfg.d_in:
        raise ValueError(f"train: acts must have shape [M, d_in={cfg.d_in}], got {acts.shape}")
    mesh = data_mesh() if mesh is None else mesh
    n_dev = mesh.shape[AXIS]
    if tcfg.batch_size % n_dev:
        raise ValueError(f"train: batch_size={tcfg.batch_size} must divide over {n_dev} devices")
    steps_per_epoch = acts.shape[0] // tcfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train: {acts.shape[0]} vectors are fewer than one batch "
                         f"({tcfg.batch_size})")
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(AXIS, None))
    if state is None:  # b_dec starts at the data mean (of a sample), as in SAE practice
        rng = np.random.default_rng(tcfg.seed)
        b_dec = acts[rng.choice(acts.shape[0], min(acts.shape[0], 65536), replace=False)].mean(0)
        state = init_state(jax.random.key(tcfg.seed), cfg, tcfg, jnp.asarray(b_dec))
    state = jax.device_put(state, replicated)
    step_fn = make_train_step(cfg, tcfg, mesh)
    resample_fn = make_resample(cfg, tcfg, mesh) if tcfg.resample_every else None
    k_dev = jax.device_put(jnp.int32(cfg.k if k is None else k), replicated)
    total = tcfg.epochs * steps_per_epoch
    history = History([], [])
    key = jax.random.key(tcfg.seed + 1)  # folded with the step: resumable

    def record(step, metrics):  # the only host sync: every log_every steps
        m = {name: float(v) for name, v in jax.device_get(metrics).items()}
        if not math.isfinite(m["loss"]):
            raise FloatingPointError(f"SAE training: loss is {m['loss']} at step {step}; "
                                     "lower lr or check the activations for inf/NaN")
        history.steps.append(step)
        history.metrics.append(m)
        return m

    with tqdm(total=total, initial=start_epoch * steps_per_epoch, disable=not progress,
              desc="sae", unit="step") as bar:
        step = start_epoch * steps_per_epoch
        for epoch in range(start_epoch, tcfg.epochs):
            perm = np.random.default_rng([tcfg.seed, epoch]).permutation(acts.shape[0])
            for b in range(steps_per_epoch):
                idx = np.sort(perm[b * tcfg.batch_size:(b + 1) * tcfg.batch_size])
                x = jax.device_put(acts[idx], batch_sharding)
                state, metrics = step_fn(state, x, k_dev)
                step += 1
                if resample_fn is not None and step % tcfg.resample_every == 0:
                    state = resample_fn(state, jax.device_put(acts[idx], replicated),
                                        jax.random.fold_in(key, step))
                if step % tcfg.log_every == 0 or b == steps_per_epoch - 1:
                    m = record(step, metrics)
                    bar.set_postfix(fvu=f"{m['fvu']:.4f}", l0=f"{m['l0']:.1f}",
                                    dead=f"{m['dead_fraction']:.3f}")
                bar.update(1)
            if on_epoch_end is not None:
                on_epoch_end(epoch, state, history)
    return state, history
