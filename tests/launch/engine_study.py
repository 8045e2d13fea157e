"""The engine's smallest hybrid, trained a few steps, for the multi-process test.

``python -m launch.worker [...] --module tests.launch.engine_study -- hybrid --out DIR``
builds the smoke preset cut down (32 units, batch 64), and trains it over every device of
every process through the engine's public API:

- ``--api step`` (default): ``init_state`` + ``make_train_step`` on the global mesh, the
  batch rendered on the device from (seed, step), k a traced argument;
- ``--api train``: the whole loop, :func:`sparsejax.train.train` (evaluation, checkpoints);
- ``--api both``: the two in turn, in the same processes (one start-up for both).

Process 0 writes the final parameters (``params.npz``) and the losses (``history.json``),
in ``DIR/<api>/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "hybrid":
        print(f"error: expected the study 'hybrid', got {argv[:1]}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="engine_study hybrid")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--method", default="topk")
    p.add_argument("--api", default="step", choices=["step", "train", "both"])
    args = p.parse_args(argv[1:])

    from sparsejax.train import preset

    cfg = preset("smoke", dataset="dsprites", method=args.method, epochs=1,
                 steps_per_epoch=args.steps, num_units=32,
                 schedule={"start": 16, "end": 8, "length": 1},
                 eval_size=64, eval_batch=32, log_every=args.steps)
    for api in ("step", "train") if args.api == "both" else (args.api,):
        out = Path(args.out) / api
        init, state, losses = (_steps if api == "step" else _loop)(cfg, args.steps, out)
        params = _host(state.params)
        if jax.process_index() == 0:
            out.mkdir(parents=True, exist_ok=True)
            np.savez(out / "params.npz", **params)
            np.savez(out / "params0.npz", **init)
            (out / "history.json").write_text(json.dumps({
                "losses": losses, "devices": jax.device_count(),
                "processes": jax.process_count()}))
    return 0


def _host(tree) -> dict[str, np.ndarray]:
    """Host copies of a replicated pytree's leaves, keyed by their paths."""
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _steps(cfg, steps: int, out: Path):
    import jax.numpy as jnp

    from sparsejax.data import get_dataset
    from sparsejax.train import init_state, make_mesh, make_train_step, model_graphdef
    from sparsejax.train.mesh import replicated

    ds = get_dataset(cfg.dataset, source="procedural")
    channels = ds.observation_shape[-1]
    mesh = make_mesh()
    state = init_state(cfg, channels, replicated(mesh))
    step = make_train_step(cfg, model_graphdef(cfg, channels), ds, mesh)
    init = _host(state.params)  # before the first step donates the state
    losses = []
    for t in range(steps):
        state, metrics = step(state, jnp.asarray(cfg.schedule(0) - t, jnp.int32))
        losses.append([float(v) for v in np.asarray(metrics["loss"])])
    return init, state, losses


def _loop(cfg, steps: int, out: Path):
    from sparsejax.train import init_state, train

    init = _host(init_state(cfg, channels=1).params)  # what train() starts from
    result = train(cfg, out / "run", metrics_fn=None, tensorboard=False,
                   progress_tty=False)
    if result.status != "done":
        raise RuntimeError(f"training ended {result.status}")
    return init, result.state, [r["train"]["loss"] for r in result.history]
