"""Several runs of one model in one program: the leading seed axis S of a train state.

The runs of a group (``TrainConfig.group``) differ beside their seed in a
:class:`RunSpec`: whether the run's L1 penalty is on, and its k if fixed (:func:`over_runs`,
:func:`per_run`, :func:`run_k`).

A study trains S seeds (or settings) of one shape together, so a sweep fills an
accelerator. :func:`over_seeds` maps a one-run function over the seed axis, vmapped on
accelerators and unrolled on CPU (:func:`resolve_seed_map`); either way run i computes
exactly what it would alone.
"""

from __future__ import annotations

# Shape letters: S runs (seeds) on the leading axis of every mapped argument.

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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
            run0 = jax.tree.map(lambda x: x[0], mapped)
            return jax.tree.map(lambda x: x[None], fn(*join(run0, shared)))
        if mode == "vmap":
            return jax.vmap(fn, in_axes=in_axes)(*args)
        outs = [fn(*join(jax.tree.map(lambda x: x[i], mapped), shared))
                for i in range(num_seeds)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return apply


class RunSpec(NamedTuple):
    """What sets one run of a group apart beside its seed: ``pen``, whether its L1 penalty
    is on, and ``k``, its fixed k (None: the schedule's). Python values where every run of
    the program shares them; in a group, the differing fields are mapped arrays (``k``
    int32 with -1 for the schedule's)."""

    pen: bool | jax.Array
    k: int | None | jax.Array


def per_run(pen, on, off):
    """``on`` for a penalised run, else ``off`` (pytrees of one structure): chosen in Python
    for a run alone (``pen`` a bool: the program holds one branch, XLA drops the other's
    work), per run by ``jnp.where`` in a group (``pen`` traced)."""
    if isinstance(pen, bool):
        return on if pen else off
    return jax.tree.map(lambda a, b: jnp.where(pen, a, b), on, off)


def run_k(k: jax.Array, run: RunSpec) -> jax.Array:
    """The run's target k this step: its fixed k, or the schedule's ``k``."""
    if run.k is None:
        return k
    if isinstance(run.k, int):
        return jnp.int32(run.k)
    return jnp.where(run.k >= 0, run.k, k).astype(jnp.int32)


def over_runs(fn: Callable, cfg, in_axes: tuple) -> Callable:
    """``fn(state, k, run, *rest)`` of one run, over the S runs of ``cfg``: ``in_axes``
    gives the axes of ``(state, k, *rest)``; ``run`` is the run's
    :attr:`~sparsejax.train.config.TrainConfig.run_specs` entry, each field a Python value
    where all runs share it (a run alone, a group of one method), a mapped constant where
    they differ."""
    fields = list(zip(*cfg.run_specs))  # per field, its value in every run
    shared = [len(set(v)) == 1 for v in fields]
    if all(shared):
        run = RunSpec(*(v[0] for v in fields))
        return over_seeds(lambda s, k, *rest: fn(s, k, run, *rest), cfg.num_runs, in_axes,
                          cfg.seed_map)
    mapped_S = tuple(np.asarray([-1 if x is None else x for x in v]) for v, same
                     in zip(fields, shared) if not same)

    def one(s, k, arrays, *rest):
        it = iter(arrays)
        run = RunSpec(*(v[0] if same else next(it) for v, same in zip(fields, shared)))
        return fn(s, k, run, *rest)

    mapped = over_seeds(one, cfg.num_runs, (in_axes[0], in_axes[1], 0, *in_axes[2:]),
                        cfg.seed_map)
    return lambda s, k, *rest: mapped(s, k, tuple(jnp.asarray(a) for a in mapped_S), *rest)
