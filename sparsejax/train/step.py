"""The jit-compiled data-parallel train step.

One call does everything on the device: draw the factors of step t, render the batch
(procedural source), forward, backward, Adam update, the L1 controller update, and the
per-unit firing counts. k is an argument (a traced int32), so the schedule never
recompiles the step. The train state is donated, so its buffers are reused in place.

Data parallelism: the state is replicated over a 1-D ``Mesh`` with axis ``"data"``, and
the batch dimension is sharded over it (``NamedSharding(mesh, P("data"))``); XLA inserts
the gradient all-reduce. The batch of step t is drawn from ``fold_in(key, t)`` with the
same global shape on any mesh (JAX's partitionable threefry gives the same numbers
however the array is sharded), so 1 and 4 devices compute the same function.

Seeds: the step of one run is mapped over the state's leading seed axis S (vmap on
accelerators, unrolled on CPU: :func:`resolve_seed_map`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sparsejax.data import FactorDataset
from sparsejax.models.vae import loss_terms, total_loss
from sparsejax.train.config import TrainConfig
from sparsejax.train.state import TrainState, make_optimizer

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, seed_axis: bool = False) -> NamedSharding:
    """Sharding of a batch ``[B, ...]`` (or ``[S, B, ...]`` with ``seed_axis``) over "data"."""
    return NamedSharding(mesh, P(None, DATA_AXIS) if seed_axis else P(DATA_AXIS))


def global_array(x, sharding: NamedSharding) -> jax.Array:
    """A global array from host data that every process holds in full (the fixed
    evaluation set, a host-read batch). Each process places only its own devices' shards,
    which a multi-process ``jit`` needs: it refuses numpy inputs with a sharded layout."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def check_batch(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{what} = {batch_size} must be divisible by the number of devices "
                         f"({n}) to shard the batch over them")


def step_keys(key_data: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(data key, noise key) of ``step`` for a run whose raw base key is ``key_data``."""
    k = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
    return tuple(jax.random.split(k))


def step_factors(dataset: FactorDataset, key_data, step, batch_size: int) -> jax.Array:
    """int32 ``[B, F]`` factors of ``step``: what the device draws (also used by host data)."""
    return dataset.sample_factors(step_keys(key_data, step)[0], batch_size)


SEED_MAPS = ("auto", "vmap", "unroll")
AUTO_SEED_MAP = {"cpu": "unroll"}  # backends not listed vmap


def resolve_seed_map(mode: str = "auto", backend: str | None = None) -> str:
    """How S runs share one program: ``"vmap"`` (batched: fills an accelerator) or
    ``"unroll"`` (S copies of the run's graph side by side; compiles S times longer).
    "auto" unrolls on CPU, where vmapping per-seed conv kernels lowers to grouped
    convolutions that XLA:CPU runs about 4x slower per image (and ``lax.map``, a while
    loop, slower still: measured 30x)."""
    if mode not in SEED_MAPS:
        raise ValueError(f"seed map {mode!r} is not known; expected one of {SEED_MAPS}")
    return mode if mode != "auto" else AUTO_SEED_MAP.get(backend or jax.default_backend(), "vmap")


def over_seeds(fn: Callable, num_seeds: int, in_axes: tuple, mode: str = "auto") -> Callable:
    """``fn`` of one run, applied to every run along the leading seed axis of the arguments
    whose ``in_axes`` entry is 0 (entries None are shared by all runs).

    S = 1 indexes the axis away (no batching at all); S > 1 vmaps or unrolls
    (:func:`resolve_seed_map`). Either way run i computes exactly what it would alone.
    """
    mode = resolve_seed_map(mode)

    def split(args):
        mapped = tuple(a for a, ax in zip(args, in_axes) if ax is not None)
        shared = tuple(a for a, ax in zip(args, in_axes) if ax is None)
        return mapped, shared

    def join(mapped, shared):
        it_m, it_s = iter(mapped), iter(shared)
        return tuple(next(it_s) if ax is None else next(it_m) for ax in in_axes)

    def apply(*args):
        mapped, shared = split(args)
        if num_seeds == 1:
            one = jax.tree.map(lambda x: x[0], mapped)
            return jax.tree.map(lambda x: x[None], fn(*join(one, shared)))
        if mode == "vmap":
            return jax.vmap(fn, in_axes=in_axes)(*args)
        outs = [fn(*join(jax.tree.map(lambda x: x[i], mapped), shared))
                for i in range(num_seeds)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return apply


def make_train_step(cfg: TrainConfig, graphdef: nnx.GraphDef, dataset: FactorDataset,
                    mesh: Mesh, *, host_data: bool | None = None) -> Callable:
    """The jitted ``step(state, k[, images]) -> (state, metrics)`` over all seeds.

    Args:
      cfg: the run's config (static: shapes, loss weights, method).
      graphdef: the model's graph definition (:func:`sparsejax.train.state.model_graphdef`).
      dataset: the factor dataset; rendered inside the step when ``dataset.on_device``.
      mesh: the device mesh; the state is replicated, the batch sharded over ``"data"``.
      host_data: force the host-fed variant (default: when the dataset is not on device).

    Returns:
      ``step(state, k) -> (state, metrics)`` (device data), or ``step(state, k, images)``
      with images ``[S, B, H, W, C]`` (host data). ``metrics`` are per-seed ``[S]`` arrays:
      the loss terms of the batch, ``l1_coef`` (the coefficient this step used) and
      ``bad_step`` (the first step with a non-finite loss so far, -1 if none).
      ``state`` is donated.
    """
    check_batch(cfg.batch_size, mesh)
    host_data = (not dataset.on_device) if host_data is None else host_data
    tx = make_optimizer(cfg)
    b, num_latents = cfg.batch_size, cfg.num_latents
    x_sharding = batch_sharding(mesh)
    use_l1 = cfg.method == "l1"
    ctrl = cfg.controller

    def one(state: TrainState, k: jax.Array, images=None):
        k_data, k_eps = step_keys(state.key, state.step)
        if images is None:
            factors = jax.lax.with_sharding_constraint(
                dataset.sample_factors(k_data, b), x_sharding)
            images = dataset.render(factors)
        x = jax.lax.with_sharding_constraint(images, x_sharding)
        eps = jax.random.normal(k_eps, (b, num_latents), x.dtype)
        coef = ctrl.coef(state.ctrl) if use_l1 else jnp.zeros((), jnp.float32)

        def loss_fn(params):
            out = nnx.merge(graphdef, params)(x, eps, k)
            terms = loss_terms(out, x)
            loss = total_loss(terms, beta=cfg.beta, sae_weight=cfg.sae_weight, l1_coef=coef)
            return loss, (terms, out.h)

        (loss, (terms, h)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        terms = {"loss": loss, **terms}
        fire = state.fire if h is None else state.fire + jnp.sum(h > 0, axis=0, dtype=jnp.int32)
        new_ctrl = ctrl.update(state.ctrl, terms["l0"], k) if use_l1 else state.ctrl
        bad = jnp.where((state.bad_step < 0) & ~jnp.isfinite(loss), state.step, state.bad_step)
        sums = {n: state.sums[n] + (terms[n] if n != "steps" else 1.0) for n in state.sums}
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                         key=state.key, ctrl=new_ctrl, fire=fire, sums=sums, bad_step=bad)
        return new, {**terms, "l1_coef": coef, "bad_step": bad}

    rep = replicated(mesh)
    if host_data:
        fn = over_seeds(one, cfg.num_seeds, (0, None, 0), cfg.seed_map)
        im_sharding = batch_sharding(mesh, seed_axis=True)
        return jax.jit(fn, in_shardings=(rep, rep, im_sharding), out_shardings=(rep, rep),
                       donate_argnums=0)
    fn = over_seeds(one, cfg.num_seeds, (0, None), cfg.seed_map)
    return jax.jit(fn, in_shardings=(rep, rep), out_shardings=(rep, rep), donate_argnums=0)


def host_batch(dataset: FactorDataset, key_data_S: np.ndarray, step: int, batch_size: int
               ) -> np.ndarray:
    """Images ``[S, B, H, W, C]`` of ``step`` for a dataset read on the host (file/TFDS).

    The factors are drawn exactly as the device step draws them, so host- and device-fed
    runs see the same batches for the same (seed, step).
    """
    factors = np.asarray(jax.vmap(lambda kd: step_factors(dataset, kd, step, batch_size))(
        jnp.asarray(key_data_S)))
    return np.stack([np.asarray(dataset.render(f), np.float32) for f in factors])
