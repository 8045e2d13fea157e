"""The hybrid's jit-compiled data-parallel train step.

One call does everything on the device: draw the factors of step t, render the batch
(procedural source), forward, backward, Adam update (:func:`engine.gradient_step`), the L1
controller update, and the per-unit firing counts. k is an argument (a traced int32), so
the schedule never recompiles the step. The train state is donated, so its buffers are
reused in place.

Data parallelism: the state is replicated over the 1-D ``"data"`` mesh
(:mod:`sparsejax.train.mesh`) and the batch dimension is sharded over it; XLA inserts the
gradient all-reduce. The batch of step t is drawn from ``fold_in(key, t)`` with the same
global shape on any mesh (JAX's partitionable threefry gives the same numbers however the
array is sharded), so 1 and 4 devices compute the same function.

Seeds: the step of one run is mapped over the state's leading seed axis S
(:func:`sparsejax.train.seeds.over_seeds`). A group (``TrainConfig.group``: Top-k and L1
in one graph) maps one more per-run argument, whether the run's penalty is on: an L1 run
sparsifies with k = N and its controller's coefficient, a Top-k run with k and none.
"""

from __future__ import annotations

# Shape letters: S runs (seeds), B batch, H x W x C image, F factors, L latents.

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sparsejax.data import FactorDataset
from sparsejax.sparsity.remedies import dead_mask
from sparsejax.train.config import TrainConfig
from sparsejax.train.engine import gradient_step
from sparsejax.train.hybrid import HybridModel
from sparsejax.train.mesh import batch_sharding, check_batch, replicated
from sparsejax.train.seeds import RunSpec, over_runs, per_run, run_k
from sparsejax.train.state import TrainState, optimizer


def step_keys(key_data: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(data key, noise key) of ``step`` for a run whose raw base key is ``key_data``."""
    k = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
    return tuple(jax.random.split(k))


def step_factors(dataset: FactorDataset, key_data, step, batch_size: int) -> jax.Array:
    """int32 ``[B, F]`` factors of ``step``: what the device draws (also used by host data)."""
    return dataset.sample_factors(step_keys(key_data, step)[0], batch_size)


def make_train_step(cfg: TrainConfig, graphdef: nnx.GraphDef, dataset: FactorDataset,
                    mesh: Mesh, *, host_data: bool | None = None,
                    scan_steps: int | None = None) -> Callable:
    """The jitted ``step(state, k[, images]) -> (state, metrics)`` over all seeds.

    Args:
      cfg: the run's config (static: shapes, loss weights, method).
      graphdef: the model's graph definition (:func:`sparsejax.train.hybrid.model_graphdef`).
      dataset: the factor dataset; rendered inside the step when ``dataset.on_device``.
      mesh: the device mesh; the state is replicated, the batch sharded over ``"data"``.
      host_data: force the host-fed variant (default: when the dataset is not on device).
      scan_steps: T: ``steps(state, k_T) -> (state, metrics)`` runs T optimiser steps
        in one dispatch (``lax.scan`` of the step over the int32 ``[T]`` per-step k; the
        L1 controller, firing counts and RNG stream carried in the state), metrics
        ``[T, S]``. Device data only (a host-fed batch is read per step). The numbers
        of T calls of the single step, to float32 rounding (XLA fuses a loop body apart).

    Returns:
      ``step(state, k) -> (state, metrics)`` (device data), or ``step(state, k, images)``
      with images ``[S, B, H, W, C]`` (host data). ``metrics`` are per-seed ``[S]`` arrays:
      the loss terms of the batch, ``l1_coef`` (the coefficient this step used) and
      ``bad_step`` (the first step with a non-finite loss so far, -1 if none).
      ``state`` is donated.
    """
    check_batch(cfg.batch_size, mesh)
    host_data = (not dataset.on_device) if host_data is None else host_data
    model = HybridModel(cfg, dataset.observation_shape[-1], graphdef)
    tx = optimizer(cfg)
    b, num_latents = cfg.batch_size, cfg.num_latents
    x_sharding = batch_sharding(mesh)
    ctrl = cfg.controller

    def run_step(state: TrainState, k: jax.Array, run: RunSpec, images=None):
        # run.pen: the controller steers this run's penalty to its k target (PENALISED)
        x, eps = step_batch(dataset, state, b, num_latents, x_sharding, images)
        coef = per_run(run.pen, ctrl.coef(state.ctrl), jnp.zeros((), jnp.float32))
        dead = dead_mask(state.last_fired, state.step, cfg.remedy.dead_after)
        params, opt_state, loss, (terms, h) = gradient_step(
            model, tx, state.params, state.opt_state, (x, eps, dead),
            (model.layer_k(k, run), coef))
        params = model.after_update(params, h)
        terms = {"loss": loss, **terms}
        if h is None:
            fire, last_fired = state.fire, state.last_fired
        else:
            fired = jnp.sum(h > 0, axis=0, dtype=jnp.int32)
            fire = state.fire + fired
            last_fired = jnp.where(fired > 0, state.step + 1, state.last_fired)
        new_ctrl = per_run(run.pen, ctrl.update(state.ctrl, terms["l0"], run_k(k, run)),
                           state.ctrl)
        bad = jnp.where((state.bad_step < 0) & ~jnp.isfinite(loss), state.step, state.bad_step)
        sums = {n: state.sums[n] + (terms[n] if n != "steps" else 1.0) for n in state.sums}
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                         key=state.key, ctrl=new_ctrl, fire=fire, last_fired=last_fired,
                         sums=sums, bad_step=bad)
        return new, {**terms, "l1_coef": coef, "bad_step": bad}

    rep = replicated(mesh)
    if scan_steps is None:
        return _jit_over_runs(run_step, cfg, mesh, host_data, out_shardings=(rep, rep))
    if host_data:
        raise ValueError(f"scan_steps={scan_steps}: a host-fed batch is read per step; "
                         "scanning needs device-rendered data")
    step_S = over_runs(run_step, cfg, (0, None))

    def run_steps(state: TrainState, k_T: jax.Array):
        if k_T.shape != (scan_steps,):
            raise ValueError(f"steps: k_T must have shape [{scan_steps}], got {k_T.shape}")
        return jax.lax.scan(step_S, state, k_T)

    return jax.jit(run_steps, in_shardings=(rep, rep), out_shardings=(rep, rep),
                   donate_argnums=0)


def scan_length(cfg: TrainConfig, dataset: FactorDataset) -> int | None:
    """T of the dispatch that scans T steps for ``cfg`` on ``dataset`` (``scan_steps`` > 1
    on device-rendered data; a host-fed batch is read per step), or None: one per call."""
    return cfg.scan_steps if cfg.scan_steps > 1 and dataset.on_device else None


def _jit_over_runs(fn: Callable, cfg: TrainConfig, mesh: Mesh, host_data: bool,
                   out_shardings) -> Callable:
    """``fn(state, k, run[, images])`` over the S runs, jitted with the state donated: the
    state and k replicated, host-fed images ``[S, B, ...]`` sharded over the batch."""
    rep = replicated(mesh)
    if host_data:
        fn = over_runs(fn, cfg, (0, None, 0))
        im_sharding = batch_sharding(mesh, seed_axis=True)
        return jax.jit(fn, in_shardings=(rep, rep, im_sharding), out_shardings=out_shardings,
                       donate_argnums=0)
    fn = over_runs(fn, cfg, (0, None))
    return jax.jit(fn, in_shardings=(rep, rep), out_shardings=out_shardings, donate_argnums=0)


def step_batch(dataset: FactorDataset, state: TrainState, b: int, num_latents: int,
               x_sharding, images=None) -> tuple[jax.Array, jax.Array]:
    """``(x [B, H, W, C], eps [B, L])`` of the state's step: rendered on the device from
    (seed, step), or the host-fed ``images``."""
    k_data, k_eps = step_keys(state.key, state.step)
    if images is None:
        factors = jax.lax.with_sharding_constraint(dataset.sample_factors(k_data, b),
                                                   x_sharding)
        images = dataset.render(factors)
    x = jax.lax.with_sharding_constraint(images, x_sharding)
    return x, jax.random.normal(k_eps, (b, num_latents), x.dtype)


def make_resample_step(cfg: TrainConfig, graphdef: nnx.GraphDef, dataset: FactorDataset,
                       mesh: Mesh, *, host_data: bool | None = None) -> Callable:
    """The jitted ``resample(state, k[, images]) -> state`` (state donated): Anthropic
    resampling of the units that have not fired for ``remedy.dead_after`` steps
    (:meth:`~sparsejax.train.hybrid.HybridModel.resample`), from the inputs of the batch
    of the state's step (the next training step then sees the same images). A resampled
    unit gets a fresh ``dead_after`` window."""
    host_data = (not dataset.on_device) if host_data is None else host_data
    model = HybridModel(cfg, dataset.observation_shape[-1], graphdef)
    tx = optimizer(cfg)
    x_sharding = batch_sharding(mesh)

    def resample(state: TrainState, k: jax.Array, run: RunSpec, images=None):
        del run  # TrainConfig refuses resampling in a group
        x, eps = step_batch(dataset, state, cfg.batch_size, cfg.num_latents, x_sharding,
                            images)
        dead = dead_mask(state.last_fired, state.step, cfg.remedy.dead_after)
        # a third key of the step, apart from its data and noise keys (step_keys)
        key = jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(state.key),
                                                  state.step), 3)[2]
        params, opt_state = model.resample(key, state.params, state.opt_state, tx, dead,
                                           x, eps, k)
        return state.replace(params=params, opt_state=opt_state,
                             last_fired=jnp.where(dead, state.step, state.last_fired))

    return _jit_over_runs(resample, cfg, mesh, host_data, out_shardings=replicated(mesh))


def host_batch(dataset: FactorDataset, key_data_S: np.ndarray, step: int, batch_size: int
               ) -> np.ndarray:
    """Images ``[S, B, H, W, C]`` of ``step`` for a dataset read on the host (file/TFDS).

    The factors are drawn exactly as the device step draws them, so host- and device-fed
    runs see the same batches for the same (seed, step).
    """
    factors = np.asarray(jax.vmap(lambda kd: step_factors(dataset, kd, step, batch_size))(
        jnp.asarray(key_data_S)))
    return np.stack([np.asarray(dataset.render(f), np.float32) for f in factors])
