"""Several runs of one model in one program: the leading seed axis S of a train state.

The runs of a group (``TrainConfig.group``) differ in one per-run flag beside their seed,
``pen``: whether the run's L1 penalty is on (:func:`over_runs`, :func:`per_run`).

A study trains S seeds (or settings) of one shape together, so a sweep fills an
accelerator. :func:`over_seeds` maps a one-run function over the seed axis, vmapped on
accelerators and unrolled on CPU (:func:`resolve_seed_map`); either way run i computes
exactly what it would alone.
"""

from __future__ import annotations

# Shape letters: S runs (seeds) on the leading axis of every mapped argument.

from collections.abc import Callable

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


def per_run(pen, on, off):
    """``on`` for a penalised run, else ``off`` (pytrees of one structure): chosen in Python
    for a run alone (``pen`` a bool: the program holds one branch, XLA drops the other's
    work), per run by ``jnp.where`` in a group (``pen`` traced)."""
    if isinstance(pen, bool):
        return on if pen else off
    return jax.tree.map(lambda a, b: jnp.where(pen, a, b), on, off)


def over_runs(fn: Callable, cfg, in_axes: tuple) -> Callable:
    """``fn(state, k, pen, *rest)`` of one run, over the S runs of ``cfg``: ``in_axes``
    gives the axes of ``(state, k, *rest)``; ``pen`` is each run's
    ``cfg.penalised_runs`` entry, a Python bool for a run alone or a group of one method,
    a mapped constant in a group."""
    pens = cfg.penalised_runs
    if len(set(pens)) == 1:
        pen = pens[0]
        return over_seeds(lambda s, k, *rest: fn(s, k, pen, *rest), cfg.num_runs, in_axes,
                          cfg.seed_map)
    mapped = over_seeds(fn, cfg.num_runs, (in_axes[0], in_axes[1], 0, *in_axes[2:]),
                        cfg.seed_map)
    pen_S = np.asarray(pens)
    return lambda s, k, *rest: mapped(s, k, jnp.asarray(pen_S), *rest)
