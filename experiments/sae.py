"""``python -m experiments sae --preset {smoke,small,paper} --out DIR [--resume]``.

Trains a sparse autoencoder (TopK by default; ``--activation`` picks ReLU + L1, BatchTopK or
JumpReLU, the remedies study's sparsifiers) on synthetic activations whose sparse ground
truth is known, and reports how many true features it recovers.

Data: F unit-norm random directions in R^d (an overcomplete dictionary when F > d); each
vector is a sum of Poisson(mean_active) of them (capped at max_active, uniform over
features, magnitudes uniform in [0.5, 1.5]) plus Gaussian noise of standard deviation
``noise`` per coordinate. A true feature counts as recovered when some decoder row has
cosine similarity above ``threshold`` with it.

Writes ``DIR/results.json`` (config, recovery, final metrics, throughput, history),
``DIR/report.md`` and ``DIR/sae_<preset>.png`` (recovery histogram and training curves),
each atomically (temporary file, then rename). The SAE trains through the engine
(:func:`sparsejax.train.sae.train`) in ``DIR/run/``: orbax checkpoints after every epoch
and at Ctrl-C, from which ``--resume`` continues (refusing a different config; only
``--epochs`` may change), and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from sparsejax.atomic_io import write_atomic
from sparsejax.dir_lock import DirLock, output_path
from sparsejax.train.config import option, resumable_fields

RUN_DIR = "run"  # the engine's run directory inside the study's


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything the study depends on; validated on construction."""

    d_in: int
    n_features: int  # F, ground-truth dictionary size
    n_latents: int  # N, SAE width
    k: int
    mean_active: float  # expected true features per vector
    max_active: int
    noise: float
    n_vectors: int
    batch_size: int
    epochs: int = option(affects="nothing")  # a resumed run may be extended
    lr: float
    k_aux: int
    dead_after: int
    threshold: float = 0.9
    seed: int = 0
    impl: str = "auto"
    activation: str = "topk"  # sparsejax.models.sae.ACTIVATIONS; AuxK is TopK's only
    l1_coef: float = 0.3  # relu: 95% recovered at L0 15 on smoke (the library's 5 kills all)
    l0_coef: float = 2e-2  # jumprelu: about k active at the smoke preset's 1,024 steps
    # JumpReLU's thresholds, sized for short CPU runs (the library's defaults are the paper's)
    jump_init: float = 0.1
    jump_bandwidth: float = 0.05
    jump_lr_scale: float = 10.0

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(f"sae study config: {what}")

        for name in ("d_in", "n_features", "n_latents", "k", "max_active", "n_vectors",
                     "batch_size", "epochs", "dead_after"):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        need(self.k <= self.n_latents, f"k={self.k} must be <= n_latents={self.n_latents}")
        need(0 < self.mean_active <= self.max_active <= self.n_features,
             f"need 0 < mean_active={self.mean_active} <= max_active={self.max_active} <= "
             f"n_features={self.n_features}")
        need(self.noise >= 0 and math.isfinite(self.noise), f"noise={self.noise} must be >= 0")
        need(self.batch_size <= self.n_vectors,
             f"batch_size={self.batch_size} must be <= n_vectors={self.n_vectors}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr} must be positive")
        need(0 <= self.k_aux <= self.n_latents, f"k_aux={self.k_aux} must be in [0, n_latents]")
        need(0 < self.threshold <= 1, f"threshold={self.threshold} must be in (0, 1]")

    def sae_config(self):
        """The :class:`sparsejax.models.sae.SAEConfig` this study trains; its checks
        (activation, coefficients, JumpReLU's settings) raise ``ValueError`` (not run on
        construction, which stays free of JAX)."""
        from sparsejax.models import sae

        return sae.SAEConfig(
            d_in=self.d_in, n_latents=self.n_latents, k=self.k, activation=self.activation,
            l1_coef=self.l1_coef, l0_coef=self.l0_coef, jump_init=self.jump_init,
            jump_bandwidth=self.jump_bandwidth, jump_lr_scale=self.jump_lr_scale,
            k_aux=self.k_aux if self.activation == "topk" else 0, impl=self.impl)


PRESETS = {
    # < 1 minute on a 2-core CPU.
    "smoke": StudyConfig(d_in=64, n_features=256, n_latents=512, k=8, mean_active=4,
                         max_active=16, noise=0.01, n_vectors=1 << 16, batch_size=512,
                         epochs=8, lr=4e-3, k_aux=32, dead_after=50),
    # Minutes on a CPU.
    "small": StudyConfig(d_in=256, n_features=2048, n_latents=4096, k=16, mean_active=8,
                         max_active=32, noise=0.01, n_vectors=1 << 19, batch_size=2048,
                         epochs=6, lr=2e-3, k_aux=128, dead_after=100),
    # SAE-library scale (d 768, N 16,384, k 32): an accelerator.
    "paper": StudyConfig(d_in=768, n_features=8192, n_latents=16384, k=32, mean_active=16,
                         max_active=64, noise=0.01, n_vectors=1 << 20, batch_size=4096,
                         epochs=10, lr=1e-3, k_aux=384, dead_after=200),
}


def synthetic_activations(cfg: StudyConfig, chunk: int = 1 << 14):
    """``(acts [M, d] float32, features [F, d] unit rows)`` from ``cfg.seed``."""
    import jax.numpy as jnp

    from sparsejax import ops

    rng = np.random.default_rng([cfg.seed, 7])
    feats = rng.standard_normal((cfg.n_features, cfg.d_in))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    feats_dev = jnp.asarray(feats, jnp.float32)
    zero = jnp.zeros((cfg.d_in,), jnp.float32)
    acts = np.empty((cfg.n_vectors, cfg.d_in), np.float32)
    for start in range(0, cfg.n_vectors, chunk):
        m = min(chunk, cfg.n_vectors - start)
        n_active = np.minimum(rng.poisson(cfg.mean_active, m), cfg.max_active)
        idx = rng.integers(0, cfg.n_features, (m, cfg.max_active), dtype=np.int32)
        mag = rng.uniform(0.5, 1.5, (m, cfg.max_active)) * (np.arange(cfg.max_active)
                                                            < n_active[:, None])
        # the sum of active features is a sparse decode of their magnitudes
        acts[start:start + m] = np.asarray(ops.sparse_decode(
            jnp.asarray(mag, jnp.float32), jnp.asarray(idx), feats_dev, zero))
    acts += (cfg.noise * rng.standard_normal(acts.shape)).astype(np.float32)
    return acts, feats.astype(np.float32)


def recovery(features_FxD: np.ndarray, W_dec_NxD: np.ndarray, threshold: float) -> dict:
    """Per true feature, the best cosine with a decoder row; and the summary figures."""
    w = W_dec_NxD / np.maximum(np.linalg.norm(W_dec_NxD, axis=1, keepdims=True), 1e-12)
    cos_FxN = features_FxD @ w.T
    best_F = cos_FxN.max(1)
    return {"best_cosine": best_F, "recovered": int(np.sum(best_F > threshold)),
            "recovered_fraction": float(np.mean(best_F > threshold)),
            "mean_best_cosine": float(best_F.mean()),
            "latents_matching_a_feature": float(np.mean(cos_FxN.max(0) > threshold))}


# ----------------------------------------------------------------------------- files


def _plot(path: Path, best_F: np.ndarray, history, cfg: StudyConfig, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsejax.viz.grids import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.hist(best_F, bins=np.linspace(min(0.0, best_F.min()), 1, 41), color="tab:blue")
    a.axvline(cfg.threshold, color="k", ls="--", lw=1, label=f"threshold {cfg.threshold}")
    a.set_xlabel("best cosine with a decoder row")
    a.set_ylabel("true features")
    a.set_title(f"recovered {np.mean(best_F > cfg.threshold):.1%} of {len(best_F)}")
    a.legend()
    steps = np.array(history.steps)
    for name, style in (("fvu", "-"), ("dead_fraction", ":"), ("aux_loss", "--")):
        b.plot(steps, [m[name] for m in history.metrics], style, label=name)
    b.set_yscale("log")
    b.set_xlabel("step")
    b.legend()
    b.set_title("training")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


_CODES = {  # how each activation makes its code z from pre = W_enc (x - b_dec) + b_enc
    "topk": "z = ReLU(TopK(pre, k))",
    "relu": "z = ReLU(pre)",
    "batchtopk": "z = ReLU(pre) at the k B largest pre-activations of the batch in "
                 "training, z = ReLU(pre) [pre > theta] at evaluation with theta the moving "
                 "average of the least kept value",
    "jumprelu": "z = pre H(pre - theta), a learned threshold per latent",
}


def _model_line(c: dict) -> str:
    act = c.get("activation", "topk")
    line = f"- SAE: {act}, N = {c['n_latents']}, k = {c['k']}, {_CODES[act]}"
    if act == "jumprelu":
        line += (f" (theta = {c['jump_init']} at step 0, rectangle kernel of width "
                 f"{c['jump_bandwidth']}, thresholds at {c['jump_lr_scale']} x the learning "
                 "rate)")
    return line + ("; decoder rows unit norm (gradient component along each row removed, "
                   "rows renormalised after each step); encoder initialised as the "
                   "decoder's transpose; b_dec initialised at the data mean.")


def _loss_line(c: dict) -> str:
    act = c.get("activation", "topk")
    fvu = "- Loss: FVU (sum of squared errors over the batch's total variance)"
    if act == "topk":
        return (f"{fvu} + 1/32 x AuxK (k_aux = {c['k_aux']} from latents dead for "
                f"{c['dead_after']} steps; residual detached, decoder bias counted once).")
    if act == "relu":
        return f"{fvu} + {c['l1_coef']} x the code's L1 over the data's mean deviation norm."
    if act == "jumprelu":
        return (f"{fvu} + {c['l0_coef']} x the mean L0 (straight-through gradient to theta); "
                "no AuxK.")
    return f"{fvu}; no AuxK (it is TopK's)."


def report_md(res: dict) -> str:
    c, r, f = res["config"], res["recovery"], res["final"]
    lines = [
        f"# SAE on synthetic activations: preset `{res['preset']}`",
        "",
        f"Command: `{res['command']}`  ",
        f"Device: {res['device']}; impl: {res['impl']}; wall time {res['wall_s']:.1f} s; "
        f"training throughput {res['vectors_per_s']:.0f} vectors/s (compile included).",
        "",
        "| true features | recovered (cos > %.2f) | fraction | mean best cosine | "
        "latents matching a feature | FVU | L0 | dead latents |" % c["threshold"],
        "|---|---|---|---|---|---|---|---|",
        f"| {c['n_features']} | {r['recovered']} | {r['recovered_fraction']:.3f} | "
        f"{r['mean_best_cosine']:.3f} | {r['latents_matching_a_feature']:.3f} | "
        f"{f['fvu']:.4f} | {f['l0']:.2f} | {f['dead_fraction']:.3f} |",
        "",
        "## Choices",
        "",
        f"- Data: {c['n_features']} random unit directions in R^{c['d_in']}; per vector "
        f"Poisson({c['mean_active']}) of them (at most {c['max_active']}, uniform over "
        f"features), magnitudes U[0.5, 1.5], Gaussian noise sd {c['noise']}; "
        f"{c['n_vectors']} vectors, seed {c['seed']}.",
        _model_line(c),
        _loss_line(c),
        f"- Adam, lr {c['lr']}, eps 6.25e-10, batch {c['batch_size']}, {c['epochs']} epochs.",
        f"- Recovered: best cosine with some decoder row > {c['threshold']}.",
        "",
        "![recovery and training curves](%s)" % res["png"],
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def run(cfg: StudyConfig, preset: str, out: Path, *, resume: bool = False,
        progress: bool = True, command: str = "") -> dict | None:
    """Runs (or resumes) the study; the results dict, or None if it was interrupted."""
    with DirLock(out):  # one process per study directory
        return _run_locked(cfg, preset, out, resume=resume, progress=progress,
                           command=command)


def _run_locked(cfg: StudyConfig, preset: str, out: Path, *, resume: bool, progress: bool,
                command: str) -> dict | None:
    import jax

    from sparsejax import ops
    from sparsejax.train import sae as sae_train
    from sparsejax.train.mesh import device_label

    t0 = time.perf_counter()
    acts, feats = synthetic_activations(cfg)
    model_cfg = cfg.sae_config()
    tcfg = sae_train.SAETrainConfig(batch_size=cfg.batch_size, lr=cfg.lr, epochs=cfg.epochs,
                                    dead_after=cfg.dead_after, seed=cfg.seed,
                                    log_every=max(1, cfg.n_vectors // cfg.batch_size // 8))
    n_dev = jax.device_count()
    if cfg.batch_size % n_dev:
        raise ValueError(f"sae study: batch_size={cfg.batch_size} must divide over the "
                         f"{n_dev} devices")
    run_dir = out / RUN_DIR
    if resume and not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    t_train = time.perf_counter()
    result = sae_train.train(acts, model_cfg, tcfg, run_dir, resume=resume, progress=progress,
                             config=dataclasses.asdict(cfg),
                             free=resumable_fields(StudyConfig))
    train_s = time.perf_counter() - t_train
    state, history = result.state, result.history
    steps_per_epoch = cfg.n_vectors // cfg.batch_size
    start_epoch = result.start_step // steps_per_epoch
    if result.status != "done":
        return None  # interrupted: the checkpoint is saved, --resume continues
    trained = (cfg.epochs * steps_per_epoch - result.start_step) * cfg.batch_size
    rec = recovery(feats, np.asarray(state.params.W_dec), cfg.threshold)
    png = f"sae_{preset}.png"
    res = {
        "study": "sae", "preset": preset, "command": command,
        "config": dataclasses.asdict(cfg),
        "impl": ops.resolve_impl(cfg.impl, n=cfg.n_latents, op="values_indices"),
        "device": device_label(),
        "recovery": {key: v for key, v in rec.items() if key != "best_cosine"},
        "final": history.metrics[-1] if history.metrics else {},
        "vectors_per_s": trained / max(train_s, 1e-9),
        "wall_s": time.perf_counter() - t0, "png": png, "resumed_from_epoch": start_epoch,
        "history": {"steps": history.steps, "metrics": history.metrics},
    }
    _plot(out / png, rec["best_cosine"], history, cfg,
          f"{cfg.activation} SAE (N={cfg.n_latents}, k={cfg.k}) on {cfg.n_features} true "
          "features")
    write_atomic(out / "results.json", json.dumps(res, indent=1).encode())
    write_atomic(out / "report.md", report_md(res).encode())
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments sae", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/run/checkpoints")
    p.add_argument("--seed", type=int, default=None, help="data and training seed")
    p.add_argument("--impl", default=None, help="top-k implementation (default: auto)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--activation", default=None,
                   help="the SAE's sparsifier: topk (default), relu, batchtopk or jumprelu "
                        "(checked against sparsejax.models.sae.ACTIVATIONS; AuxK is TopK's "
                        "only)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from sparsejax.train import CheckpointError, RunExistsError, TrainingDiverged

    overrides = {key: v for key, v in (("seed", args.seed), ("impl", args.impl),
                                       ("epochs", args.epochs), ("activation", args.activation))
                 if v is not None}
    try:
        cfg = dataclasses.replace(PRESETS[args.preset], **overrides)
        from sparsejax.ops import IMPLS

        if cfg.impl not in IMPLS:
            raise ValueError(f"--impl {cfg.impl!r}: expected one of {IMPLS}")
        cfg.sae_config()
        res = run(cfg, args.preset, output_path(args.out), resume=args.resume,
                  progress=not args.no_progress,
                  command="python -m experiments sae " + " ".join(argv or sys.argv[1:]))
    except (ValueError, FileNotFoundError, RunExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if res is None:
        print(f"interrupted; continue with --resume --out {args.out}", file=sys.stderr)
        return 130
    r = res["recovery"]
    print(f"recovered {r['recovered']}/{cfg.n_features} true features "
          f"({r['recovered_fraction']:.1%}, cos > {cfg.threshold}); FVU "
          f"{res['final']['fvu']:.4f}; wrote {args.out}/results.json, report.md, {res['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
