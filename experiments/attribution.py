"""``python -m experiments attribution --preset {smoke,small} --out DIR``.

Attribution methods scored against the renderers' exact object masks. For each task (a
classifier of one factor of a procedural dataset: dSprites shape, Shapes3D object hue; and
a linear probe of dSprites shape on a VAE-SAE hybrid's sparse code), the study trains the
classifier through the engine (:func:`sparsejax.train.engine.gradient_step`, the project's
Adam), attributes the target class on held-out images it classifies correctly with every
method of :mod:`sparsejax.interp.attribution` plus two baselines (uniform noise; the
Sobel edge magnitude of the image, XAI-TRIS's edge detector), and scores each with
:mod:`sparsejax.interp.faithfulness`: pixel flipping, ROAD, faithfulness correlation,
infidelity, max-sensitivity, relevance mass / rank accuracy and the pointing game against
``render_masks``, complexity, and the parameter-randomisation check (attributions of the
trained model against those of a re-initialised one). Methods are ranked by their mean
rank over the faithfulness and localisation metrics.

Writes ``DIR/results.json``, ``DIR/report.md`` and ``DIR/attr_<task>.png`` (attribution
grids beside the masks), each atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from sparsejax.atomic_io import write_atomic
from sparsejax.dir_lock import DirLock, output_path

BASELINES = ("random", "sobel")
# (dataset, factor classified, backbone)
TASKS = {"dsprites_shape": ("dsprites", "shape", "conv"),
         "shapes3d_hue": ("shapes3d", "object_hue", "conv"),
         "dsprites_shape_hybrid": ("dsprites", "shape", "hybrid")}
# Metrics that rank the methods (faithfulness and localisation), as named in METRICS.
RANKED = ("deletion_auc", "insertion_auc", "road_auc", "faithfulness_corr", "infidelity",
          "mass_accuracy", "rank_accuracy", "pointing_game")
SANITY_FAIL = 0.5  # rank correlation with the randomised model's attributions above this


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything the study depends on; validated on construction."""

    tasks: tuple[str, ...]
    train_images: int  # rendered once, sampled in batches
    train_steps: int
    batch_size: int
    lr: float
    width: int  # channels of the first conv of the small classifier
    n_eval: int  # held-out images for the accuracy
    n_attr: int  # correctly classified images attributed
    patch: int  # side of the square features of occlusion, KernelSHAP, LIME, Shapley sampling
    ig_steps: int
    noise_samples: int  # SmoothGrad / VarGrad
    shap_samples: int
    lime_samples: int
    shapley_perms: int
    curve_steps: int  # deletion / insertion points
    road_steps: int
    draws: int  # faithfulness correlation, infidelity
    sens_draws: int  # max-sensitivity
    chunk: int
    hybrid_units: int = 500
    hybrid_k: int = 50
    methods: tuple[str, ...] = ()  # a subset of the methods and baselines; () = all
    seed: int = 0
    # a trained hybrid's run directory (``train`` / ``collapse`` cell, dSprites): its encoder
    # replaces the freshly initialised one of the hybrid task (None: untrained encoder)
    hybrid_from: str | None = None

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ValueError(f"attribution study config: {what}")

        unknown = [t for t in self.tasks if t not in TASKS]
        need(self.tasks and not unknown, f"tasks {unknown or '()'}: expected some of {list(TASKS)}")
        for name in ("train_images", "train_steps", "batch_size", "width", "n_eval", "n_attr",
                     "patch", "ig_steps", "noise_samples", "shap_samples", "lime_samples",
                     "shapley_perms", "curve_steps", "road_steps", "draws", "sens_draws",
                     "chunk", "hybrid_units", "hybrid_k"):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        need(64 % self.patch == 0, f"patch={self.patch} must divide 64")
        need(self.batch_size <= self.train_images, "batch_size must be <= train_images")
        need(self.n_attr <= self.n_eval, "n_attr must be <= n_eval")
        need(self.hybrid_k <= self.hybrid_units, "hybrid_k must be <= hybrid_units")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr} must be positive")
        from sparsejax.interp.attribution import METHOD_NAMES

        bad = [m for m in self.methods if m not in (*METHOD_NAMES, *BASELINES)]
        need(not bad, f"methods {bad}: expected some of {[*METHOD_NAMES, *BASELINES]}")


PRESETS = {
    # CI: one task, a few images (under 3 minutes on a shared 2-core CPU).
    "smoke": StudyConfig(tasks=("dsprites_shape",), train_images=1024, train_steps=200,
                         batch_size=64, lr=4e-3, width=8, n_eval=64, n_attr=8, patch=16,
                         ig_steps=8, noise_samples=4, shap_samples=32, lime_samples=32,
                         shapley_perms=2, curve_steps=8, road_steps=4, draws=8, sens_draws=2,
                         chunk=256),
    # All three tasks (at most 15 minutes on a 2-core CPU).
    "small": StudyConfig(tasks=tuple(TASKS), train_images=4096, train_steps=500,
                         batch_size=64, lr=2e-3, width=16, n_eval=256, n_attr=16, patch=8,
                         ig_steps=16, noise_samples=8, shap_samples=128, lime_samples=128,
                         shapley_perms=4, curve_steps=16, road_steps=8, draws=16,
                         sens_draws=2, chunk=512),
}


# ----------------------------------------------------------------------------- models
def _classifier(channels: int, classes: int, width: int, key):
    """Conv(w, 4, s2) -> Conv(2w) -> Conv(2w) (ReLU each; 64 -> 8 px) -> Dense: returns
    ``(logits, {"conv3": last conv map})`` (Grad-CAM's layer)."""
    from flax import nnx

    from sparsejax.models.conv import Conv, dense

    class Classifier(nnx.Module):
        def __init__(self, rngs):
            specs = ((channels, width), (width, 2 * width), (2 * width, 2 * width))
            self.convs = nnx.List([Conv(ci, co, 4, rngs=rngs) for ci, co in specs])
            self.fc = dense(8 * 8 * 2 * width, classes, rngs)

        def features(self, x):
            import jax

            h = x
            for conv in self.convs:
                h = jax.nn.relu(conv(h))
            return self.fc(h.reshape(h.shape[0], -1)), {"conv3": h}

        def __call__(self, x):
            return self.features(x)[0]

    return Classifier(nnx.Rngs(params=key))


def _hybrid_probe(channels: int, classes: int, cfg: StudyConfig, key, encoder_params=None):
    """A linear probe on the sparse code h of a VAE-SAE hybrid (TopK, k = hybrid_k)."""
    import jax
    from flax import nnx

    from sparsejax.models.conv import dense
    from sparsejax.models.vae import VAE

    k_enc, k_head = jax.random.split(key)

    class Probe(nnx.Module):
        def __init__(self):
            self.vae = VAE(channels, method="topk", num_units=cfg.hybrid_units,
                           rngs=nnx.Rngs(params=k_enc))
            self.head = dense(cfg.hybrid_units, classes, nnx.Rngs(params=k_head))

        def __call__(self, x):
            h = self.vae.encode(x, jax.numpy.asarray(cfg.hybrid_k)).h
            return self.head(h)  # only the head trains (a filter in train_classifier)

    return Probe()


def _trained_hybrid_params(run_dir: str):
    """The ``nnx.Param`` state of seed 0 of a trained hybrid run directory."""
    from flax import nnx

    from sparsejax.train.loop import load_run

    return nnx.state(load_run(run_dir).model(0), nnx.Param)


def hybrid_settings(run_dir: str) -> dict:
    """``hybrid_units`` and ``hybrid_k`` of a trained hybrid run directory (its config), or a
    ValueError naming what is wrong with it, before any work."""
    from sparsejax.atomic_io import read_json

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"--hybrid-from {run_dir}: no config.json there (expected a run "
                         "directory of `python -m experiments train` or a collapse cell)")
    c = read_json(path, "run config")
    if c.get("dataset") != "dsprites" or c.get("method") not in ("topk", "l1") or c.get(
            "placement", "hidden") != "hidden":
        raise ValueError(f"--hybrid-from {run_dir}: a {c.get('dataset')} {c.get('method')} "
                         "run; expected a dSprites Top-k or L1 hybrid (placement hidden)")
    return {"hybrid_units": int(c["num_units"]), "hybrid_k": int(c["schedule"]["end"]),
            "hybrid_from": str(run_dir)}


class _CEModel:
    """Engine model: softmax cross-entropy of a classifier's logits (``nnx.Param`` state)."""

    def __init__(self, graphdef, rest):
        self.graphdef, self.rest = graphdef, rest

    def init(self, key):
        raise NotImplementedError  # parameters come from the module built above

    def loss(self, params, batch, hyper):
        import jax.numpy as jnp
        import optax
        from flax import nnx

        x, y = batch
        logits = nnx.merge(self.graphdef, params, self.rest)(x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce, {"acc": jnp.mean(jnp.argmax(logits, -1) == y)}


def train_classifier(module, x_N, y_N, cfg: StudyConfig, key, trainable=None):
    """Trains ``module`` (in place) on ``(x, y)`` with the engine; the final loss and
    training accuracy. ``trainable``: an nnx filter of what trains (default all params)."""
    import jax
    from flax import nnx

    from sparsejax.train.engine import gradient_step
    from sparsejax.train.optim import make_optimizer

    graphdef, params, rest = nnx.split(module, trainable or nnx.Param, ...)
    model = _CEModel(graphdef, rest)
    tx = make_optimizer(cfg.lr)
    x_dev, y_dev = jax.numpy.asarray(x_N), jax.numpy.asarray(y_N)

    @jax.jit
    def step(params, opt_state, key):
        idx = jax.random.randint(key, (cfg.batch_size,), 0, x_dev.shape[0])
        params, opt_state, loss, aux = gradient_step(model, tx, params, opt_state,
                                                     (x_dev[idx], y_dev[idx]), None)
        return params, opt_state, loss, aux["acc"]

    opt_state = tx.init(params)
    for key_t in jax.random.split(key, cfg.train_steps):
        params, opt_state, loss, acc = step(params, opt_state, key_t)
    nnx.update(module, params)
    return float(loss), float(acc)


# ----------------------------------------------------------------------------- baselines
def sobel(x_BxHxWxC):
    """Edge magnitude of the image (Sobel), summed over channels: ``[B, H, W]``."""
    import jax.numpy as jnp
    from jax import lax

    k = jnp.asarray([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    x = x_BxHxWxC.transpose(0, 3, 1, 2).reshape(-1, 1, *x_BxHxWxC.shape[1:3])
    gx = lax.conv(x, k[None, None], (1, 1), "SAME")
    gy = lax.conv(x, k.T[None, None], (1, 1), "SAME")
    mag = jnp.sqrt(gx ** 2 + gy ** 2).reshape(x_BxHxWxC.shape[0], -1, *x_BxHxWxC.shape[1:3])
    return mag.sum(1)


# ----------------------------------------------------------------------------- methods
def attribution_fns(f, f_cam, x, cfg: StudyConfig):
    """name -> ``(x, target, key) -> attr`` for every method and baseline on this model."""
    import jax

    from sparsejax.interp import attribution as A

    feats = A.patch_features(x.shape[1:3], cfg.patch)
    c = cfg.chunk
    fns = {
        "saliency": lambda x, t, k: A.saliency(f, x, t),
        "input_x_gradient": lambda x, t, k: A.input_x_gradient(f, x, t),
        "integrated_gradients": lambda x, t, k: A.integrated_gradients(
            f, x, t, steps=cfg.ig_steps, chunk=c),
        "smoothgrad": lambda x, t, k: A.smoothgrad(f, x, t, key=k, samples=cfg.noise_samples,
                                                   chunk=c),
        "vargrad": lambda x, t, k: A.vargrad(f, x, t, key=k, samples=cfg.noise_samples,
                                             chunk=c),
        "guided_backprop": lambda x, t, k: A.guided_backprop(f, x, t),
        "deconvnet": lambda x, t, k: A.deconvnet(f, x, t),
        "deeplift": lambda x, t, k: A.deeplift(f, x, t),
        "lrp_epsilon": lambda x, t, k: A.lrp(f, x, t, rule="epsilon", epsilon=0.01),
        "lrp_zplus": lambda x, t, k: A.lrp(f, x, t, rule="zplus"),
        "lrp_gamma": lambda x, t, k: A.lrp(f, x, t, rule="gamma", gamma=0.25),
        "occlusion": lambda x, t, k: A.occlusion(f, x, t, patch=cfg.patch, chunk=c),
        "kernel_shap": lambda x, t, k: A.kernel_shap(f, x, t, key=k, samples=cfg.shap_samples,
                                                     features=feats, chunk=c),
        "lime": lambda x, t, k: A.lime(f, x, t, key=k, samples=cfg.lime_samples,
                                       features=feats, chunk=c),
        "shapley_sampling": lambda x, t, k: A.shapley_sampling(
            f, x, t, key=k, permutations=cfg.shapley_perms, features=feats, chunk=c),
    }
    if f_cam is not None:
        fns["grad_cam"] = lambda x, t, k: A.grad_cam(f_cam, x, t, layer="conv3")
    fns["random"] = lambda x, t, k: jax.random.uniform(k, x.shape)
    fns["sobel"] = lambda x, t, k: sobel(x)
    return {n: fn for n, fn in fns.items() if not cfg.methods or n in cfg.methods}


def score_method(fn, f, x, t, mask, key, cfg: StudyConfig) -> tuple[dict, dict, object]:
    """Every metric of one method (means over images), its timings, its attributions."""
    import jax

    from sparsejax.interp import faithfulness as F

    k_attr, k_road, k_corr, k_inf, k_sens = jax.random.split(key, 5)
    t0 = time.perf_counter()
    attr = jax.block_until_ready(fn(x, t, k_attr))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    attr = jax.block_until_ready(fn(x, t, k_attr))
    steady = time.perf_counter() - t0
    pix = F.pixel_map(attr)
    full = attr if attr.shape == x.shape else jax.numpy.broadcast_to(
        attr[..., None] / x.shape[-1], x.shape)
    m = {
        "deletion_auc": F.deletion(f, x, pix, t, steps=cfg.curve_steps, chunk=cfg.chunk)[0],
        "insertion_auc": F.insertion(f, x, pix, t, steps=cfg.curve_steps, chunk=cfg.chunk)[0],
        "road_auc": F.road(f, x, pix, t, key=k_road, steps=cfg.road_steps, chunk=cfg.chunk)[0],
        "faithfulness_corr": F.faithfulness_correlation(
            f, x, pix, t, key=k_corr, draws=cfg.draws, subset=cfg.patch ** 2,
            chunk=cfg.chunk),
        "infidelity": F.infidelity(f, x, full, t, key=k_inf, draws=cfg.draws, chunk=cfg.chunk),
        "max_sensitivity": F.max_sensitivity(lambda v: fn(v, t, k_attr), x, key=k_sens,
                                             draws=cfg.sens_draws),
        "mass_accuracy": F.relevance_mass_accuracy(pix, mask),
        "rank_accuracy": F.relevance_rank_accuracy(pix, mask),
        "pointing_game": F.pointing_game(pix, mask),
        "gini": F.gini(pix), "entropy": F.entropy(pix),
    }
    return ({n: float(np.nanmean(np.asarray(v))) for n, v in m.items()},
            {"first_s": first, "steady_s": steady}, np.asarray(pix))


def rank_methods(table: dict[str, dict]) -> list[tuple[str, float]]:
    """Methods by mean rank over :data:`RANKED` (1 = best on a metric), best first."""
    from sparsejax.interp.faithfulness import METRICS

    names = list(table)
    ranks = np.zeros((len(names), len(RANKED)))
    for j, metric in enumerate(RANKED):
        v = np.array([table[n][metric] for n in names])
        order = np.argsort(-v if METRICS[metric] else v, kind="stable")
        ranks[order, j] = np.arange(1, len(names) + 1)
    mean = ranks.mean(1)
    return sorted(zip(names, mean.tolist()), key=lambda p: p[1])


# ----------------------------------------------------------------------------- a task
def run_task(name: str, cfg: StudyConfig, out: Path, log) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparsejax.data import get_dataset
    from sparsejax.interp.faithfulness import randomisation_similarity

    dataset, factor, backbone = TASKS[name]
    ds = get_dataset(dataset, "procedural")
    j = ds.factor_names.index(factor)
    classes = ds.factor_sizes[j]
    channels = ds.observation_shape[-1]
    key = jax.random.fold_in(jax.random.key(cfg.seed), list(TASKS).index(name))
    k_data, k_eval, k_model, k_train, k_rand, k_attr = jax.random.split(key, 6)
    t0 = time.perf_counter()
    f_train = ds.sample_factors(k_data, cfg.train_images)
    x_train = jnp.concatenate([ds.render(f_train[i:i + 512])
                               for i in range(0, cfg.train_images, 512)])
    f_eval = ds.sample_factors(k_eval, cfg.n_eval)
    x_eval = ds.render(f_eval)

    def make(k):
        if backbone == "conv":
            return _classifier(channels, classes, cfg.width, k)
        return _hybrid_probe(channels, classes, cfg, k)

    graphdef = nnx.split(nnx.eval_shape(lambda: make(k_model)))[0]
    init = jax.jit(lambda k: nnx.state(make(k)))  # one compiled program, not one per layer

    def build(k):
        return nnx.merge(graphdef, init(k))

    model = build(k_model)
    if backbone == "hybrid" and cfg.hybrid_from:
        nnx.update(model.vae, _trained_hybrid_params(cfg.hybrid_from))
    trainable = nnx.Param if backbone == "conv" else nnx.All(nnx.Param, nnx.PathContains("head"))
    loss, train_acc = train_classifier(model, x_train, f_train[:, j], cfg, k_train, trainable)
    train_s = time.perf_counter() - t0
    pred = jnp.argmax(model(x_eval), -1)
    correct = np.flatnonzero(np.asarray(pred == f_eval[:, j]))
    acc = float(len(correct) / cfg.n_eval)
    chance = 1.0 / classes
    log(f"[attribution] {name}: trained in {train_s:.0f} s, held-out accuracy {acc:.3f} "
        f"(chance {chance:.3f})")
    idx = correct[:cfg.n_attr] if len(correct) >= cfg.n_attr else np.arange(cfg.n_attr)
    x, t = x_eval[idx], f_eval[idx, j]
    mask = ds.render_masks(f_eval[idx])

    f = lambda v: model(v)  # noqa: E731  (one function object: compiled once per method)
    f_cam = (lambda v: model.features(v)) if backbone == "conv" else None
    random_model = build(k_rand)  # re-initialised parameters (Adebayo 2018)
    if backbone == "hybrid" and not cfg.hybrid_from:  # the probe's head is all that trained
        nnx.update(random_model, nnx.state(model, nnx.PathContains("vae")))
    f_rand = lambda v: random_model(v)  # noqa: E731
    f_rand_cam = (lambda v: random_model.features(v)) if backbone == "conv" else None
    fns = attribution_fns(f, f_cam, x, cfg)
    fns_rand = attribution_fns(f_rand, f_rand_cam, x, cfg)
    table, timing, maps = {}, {}, {}
    for i, (method, fn) in enumerate(fns.items()):
        km = jax.random.fold_in(k_attr, i)
        table[method], timing[method], maps[method] = score_method(fn, f, x, t, mask, km, cfg)
        a_rand = fns_rand[method](x, t, jax.random.fold_in(km, 1))
        table[method]["randomisation_similarity"] = float(np.mean(np.asarray(
            randomisation_similarity(maps[method], a_rand))))
        log(f"[attribution] {name} {method}: mass {table[method]['mass_accuracy']:.3f} rank "
            f"{table[method]['rank_accuracy']:.3f} deletion {table[method]['deletion_auc']:.3f}"
            f" ({timing[method]['first_s']:.1f} s)")
    png = f"attr_{name}.png"
    _plot_grid(out / png, np.asarray(x), np.asarray(mask), maps, name)
    return {"dataset": dataset, "factor": factor, "backbone": backbone, "classes": classes,
            "train_loss": loss, "train_accuracy": train_acc, "accuracy": acc,
            "chance": chance, "train_s": train_s, "n_attributed": int(len(idx)),
            "all_correct": bool(len(correct) >= cfg.n_attr),
            "mask_fraction": float(np.asarray(mask).mean()), "table": table,
            "timing": timing, "ranking": rank_methods(table), "png": png,
            "grad_cam": "conv3 (8x8)" if backbone == "conv" else
            "n/a: the hybrid's encoder exposes no conv maps"}


def _plot_grid(path: Path, x, mask, maps: dict, title: str, rows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsejax.viz.grids import save_figure

    rows = min(rows, x.shape[0])
    cols = 2 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.2 * rows + 0.4), squeeze=False)
    for r in range(rows):
        img = x[r].squeeze(-1) if x.shape[-1] == 1 else x[r]
        panels = [("image", img, "gray"), ("mask", mask[r], "gray")]
        panels += [(n, np.abs(a[r]), "inferno") for n, a in maps.items()]
        for c, (n, p, cmap) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(p, cmap=cmap)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(n.replace("_", "\n"), fontsize=6)
    fig.suptitle(f"{title}: |attribution| of the target class", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


# ----------------------------------------------------------------------------- report
def report_md(res: dict) -> str:
    from sparsejax.interp.faithfulness import METRICS

    cfg = res["config"]
    cols = (*RANKED, "max_sensitivity", "gini", "entropy", "randomisation_similarity")
    arrow = {m: "↑" if METRICS[m] else "↓" for m in cols}
    lines = [f"# Attribution against ground-truth masks: preset `{res['preset']}`", "",
             f"Command: `{res['command']}`  ", f"Device: {res['device']}; wall time "
             f"{res['wall_s']:.0f} s.", ""]
    for name, task in res["tasks"].items():
        lines += [f"## {name}: {task['dataset']} {task['factor']} ({task['backbone']})", "",
                  f"Held-out accuracy {task['accuracy']:.3f} (chance {task['chance']:.3f}; "
                  f"train accuracy {task['train_accuracy']:.3f}, {task['train_s']:.0f} s). "
                  f"{task['n_attributed']} images attributed"
                  + ("" if task["all_correct"] else " (NOT all correctly classified: the "
                     "classifier is too weak; not evidence)")
                  + f"; the mask covers {task['mask_fraction']:.1%} of the pixels (a random "
                  f"attribution's expected mass accuracy). Grad-CAM: {task['grad_cam']}.", "",
                  "| method | " + " | ".join(f"{c} {arrow[c]}" for c in cols)
                  + " | time s (first / steady) |",
                  "|---|" + "---|" * (len(cols) + 1)]
        for method, row in task["table"].items():
            tm = task["timing"][method]
            flag = " (baseline)" if method in BASELINES else ""
            lines.append(f"| {method}{flag} | " + " | ".join(f"{row[c]:.3f}" for c in cols)
                         + f" | {tm['first_s']:.2f} / {tm['steady_s']:.2f} |")
        rank = task["ranking"]
        pos = {n: i for i, (n, _) in enumerate(rank)}
        ran = [b for b in BASELINES if b in pos]
        beat = [n for n, _ in rank if n not in BASELINES
                and pos[n] < min((pos[b] for b in ran), default=len(rank))]
        fail = [n for n, r in task["table"].items()
                if n not in BASELINES and r["randomisation_similarity"] > SANITY_FAIL]
        lines += ["", "Ranking (mean rank over " + ", ".join(RANKED) + "; 1 = best): "
                  + ", ".join(f"{i + 1}. {n} ({r:.2f})" for i, (n, r) in enumerate(rank)), "",
                  f"Methods ranked above both baselines: {', '.join(beat) or 'none'}.  ",
                  f"Randomisation check (Spearman of |attr| with the re-initialised model's "
                  f"> {SANITY_FAIL}: the map barely depends on the learned weights): "
                  f"{', '.join(fail) or 'none fail'}.", "",
                  f"![attributions]({task['png']})", ""]
    lines += ["## Choices", "",
              "- Metrics are means over the attributed images; pixel maps are attributions "
              "summed over channels. Deletion / insertion / ROAD use the softmax probability "
              "of the target; removal sets pixels to 0 (black); ROAD imputes from the kept "
              "neighbours with noise sd 0.01 and stops at 90% removed.",
              "- Black is dSprites' background and the zero baseline: on dSprites every "
              "method that multiplies by x - 0 (input x gradient, IG, DeepLIFT, LRP) is exactly "
              "zero off the sprite, so its mass accuracy is 1 by construction, not by merit; "
              "rank accuracy and the Shapes3D task (no black background) are the fairer tests.",
              "- Perturbation methods use square patches of `patch` px as features and a zero "
              "baseline; IG and DeepLIFT a zero baseline; LRP epsilon 0.01, gamma 0.25; "
              "SmoothGrad / VarGrad noise 15% of the image range.",
              "- Randomisation check: every parameter re-initialised at once (not the "
              "cascading variant); for the hybrid probe on an untrained encoder only the head "
              "is re-initialised.",
              ("- The hybrid task's encoder is the trained hybrid of "
               f"`{cfg['hybrid_from']}` (seed 0, k = {cfg['hybrid_k']}); a linear probe on its "
               "sparse code is trained; the randomisation check re-initialises both."
               if cfg.get("hybrid_from") else
               "- The hybrid task's encoder is a freshly initialised VAE-SAE hybrid (TopK, "
               "k = hybrid_k): only its linear probe is trained, so it measures attribution "
               "through the hybrid's architecture, not through a trained hybrid (pass "
               "`--hybrid-from RUN_DIR` for a trained one)."),
              "- Timing: the first call includes compilation; steady is a second call.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def run(cfg: StudyConfig, preset: str, out: Path, *, command: str = "", log=print) -> dict:
    from sparsejax.train.mesh import device_label

    with DirLock(out):
        t0 = time.perf_counter()
        tasks = {name: run_task(name, cfg, out, log) for name in cfg.tasks}
        res = {"study": "attribution", "preset": preset, "command": command,
               "config": dataclasses.asdict(cfg), "device": device_label(),
               "wall_s": time.perf_counter() - t0, "tasks": tasks}
        write_atomic(out / "results.json", json.dumps(res, indent=1) + "\n")
        write_atomic(out / "report.md", report_md(res))
        return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments attribution", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", choices=sorted(PRESETS))
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--tasks", default=None, help=f"comma-separated subset of {list(TASKS)}")
    p.add_argument("--hybrid-from", default=None, metavar="RUN_DIR",
                   help="a trained dSprites hybrid run: the hybrid task probes its encoder")
    args = p.parse_args(argv)
    over = {}
    if args.hybrid_from:
        over.update(hybrid_settings(args.hybrid_from))
    if args.seed is not None:
        over["seed"] = args.seed
    if args.tasks:
        over["tasks"] = tuple(args.tasks.split(","))
    cfg = dataclasses.replace(PRESETS[args.preset], **over)
    argv = sys.argv[1:] if argv is None else argv
    res = run(cfg, args.preset, output_path(args.out),
              command="python -m experiments attribution " + shlex.join(argv))
    for name, task in res["tasks"].items():
        top = ", ".join(n for n, _ in task["ranking"][:3])
        print(f"[attribution] {name}: accuracy {task['accuracy']:.3f}; best: {top}")
    print(f"[attribution] wrote {args.out}/report.md, results.json ({res['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
