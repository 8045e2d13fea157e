"""``python -m experiments heads --preset {smoke,small,paper} --out DIR [--resume]``.

Attention heads across model scale, on tasks whose ground-truth heads are known: do larger
models grow more interpretable heads? A grid of scales (layers x heads x width) x tasks
(:data:`sparsejax.data.sequences.TASKS`) x seeds; the seeds of one (scale, task) cell train
together in one compiled program (vmapped) through the engine
(:func:`sparsejax.train.transformer.train`), in ``DIR/runs/<cell>/`` (orbax checkpoints
after every epoch and at Ctrl-C; ``--resume`` continues each cell and reproduces the
uninterrupted run). Every epoch's end measures every head (detectors, entropy, confidence,
ground-truth accuracy, gradient and mean-ablation importance, label;
:mod:`sparsejax.interp.heads`).

Writes ``DIR/results.json`` (a ``heads`` list: one entry per trained model with its shape,
task, seed, ``max_induction_score``, labels, onset step and curves), ``DIR/report.md`` and
PNG plots (``heads_patterns.png``, ``heads_curves.png``, ``heads_scale.png``), atomically.

    python -m experiments heads --preset small --out runs/heads
    python -m experiments heads --preset smoke --out /tmp/h --set scales=1x2x32,2x2x32

``--set FIELD=VALUE`` overrides a preset field (tuples comma-separated; a scale is
``LAYERSxHEADSxWIDTH``). Exit status: 0 done, 130 interrupted, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import typing
from pathlib import Path

import numpy as np

from experiments.wall_time import WallTime
from sparsejax.atomic_io import write_atomic
from sparsejax.data.sequences import TASKS, TaskConfig
from sparsejax.dir_lock import DirLock, output_path
from sparsejax.interp.heads import (DUPLICATE_THRESHOLD, GROUND_TRUTH_THRESHOLD,
                                    INDUCTION_THRESHOLD, LABELS, POSITIONAL_THRESHOLD,
                                    PREVIOUS_TOKEN_THRESHOLD, SPECIALISED)
from sparsejax.train.config import option
from sparsejax.train.errors import ConfigError, RunExistsError

RUNS_DIR = "runs"
# The checks on the small preset: in every two-layer model on repeated_tokens some
# head scores at least this; no head of a one-layer model scores above the second.
TWO_LAYER_INDUCTION_MIN = 0.5
ONE_LAYER_INDUCTION_MAX = 0.3
INDUCTION_TASK = "repeated_tokens"


@dataclasses.dataclass(frozen=True)
class HeadsStudyConfig:
    """Everything the study depends on; validated on construction (:class:`ConfigError`).

    A scale is ``(layers, heads, width)``. Models are attention-only unless ``mlp``.
    """

    scales: tuple[tuple[int, int, int], ...]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    vocab: int = 64
    seq_len: int = 32
    min_repeat: int = 8
    mlp: bool = False
    positions: str = "rotary"
    mlp_topk: int = 0
    attn_topk: int = 0
    batch_size: int = 32
    lr: float = option(3e-3, resumable=True)
    epochs: int = option(10, affects="nothing")
    steps_per_epoch: int = 200
    scan_steps: int = 50
    eval_batch: int = 64
    seed_map: str = "vmap"

    def __post_init__(self):
        def need(ok, what):
            if not ok:
                raise ConfigError(f"heads study config: {what}")

        need(len(self.scales) >= 1, "scales must list at least one (layers, heads, width)")
        for s in self.scales:
            need(len(s) == 3 and all(isinstance(x, int) and x >= 1 for x in s),
                 f"scale {s} must be three integers >= 1 (layers, heads, width)")
            need(s[2] % s[1] == 0, f"scale {s}: width {s[2]} must be divisible by heads {s[1]}")
        need(len(self.tasks) >= 1 and all(t in TASKS for t in self.tasks),
             f"tasks {self.tasks} must be some of {TASKS}")
        need(len(set(self.scales)) == len(self.scales) and len(set(self.tasks)) == len(
            self.tasks), "scales and tasks must not repeat")
        for name in ("vocab", "seq_len", "min_repeat"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                 f"{name}={v!r} must be an integer >= 1")
        # the library's own checks (the training fields are HeadsTrainConfig's to check),
        # before any work starts
        try:
            for task in self.tasks:
                self.task_config(task)
            for scale in self.scales:
                self.model_config(scale)
            self.train_config()
        except ValueError as e:
            raise ConfigError(f"heads study config: {e}") from None

    def task_config(self, task: str) -> TaskConfig:
        return TaskConfig(task, vocab=self.vocab, seq_len=self.seq_len,
                          min_repeat=min(self.min_repeat, self.seq_len // 2))

    def model_config(self, scale):
        from sparsejax.models.transformer import TransformerConfig

        layers, heads, width = scale
        return TransformerConfig(vocab=self.vocab, max_len=self.seq_len, layers=layers,
                                 heads=heads, width=width, mlp=self.mlp,
                                 positions=self.positions, mlp_topk=self.mlp_topk,
                                 attn_topk=self.attn_topk)

    def train_config(self):
        from sparsejax.train.transformer import HeadsTrainConfig

        return HeadsTrainConfig(seeds=self.seeds, batch_size=self.batch_size, lr=self.lr,
                                epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
                                scan_steps=self.scan_steps, eval_batch=self.eval_batch,
                                seed_map=self.seed_map)


PRESETS: dict[str, HeadsStudyConfig] = {
    # CI: a one-layer control and a two-layer model, one task, one seed: < 2 min on 2 cores
    "smoke": HeadsStudyConfig(scales=((1, 2, 32), (2, 2, 32)), tasks=("repeated_tokens",),
                              seeds=(0,), epochs=3, steps_per_epoch=100, eval_batch=32),
    # a 2-core CPU in about 10 minutes: depth 1-3, 2-4 heads, two tasks, two seeds
    "small": HeadsStudyConfig(scales=((1, 4, 64), (2, 2, 64), (2, 4, 64), (3, 4, 64)),
                              tasks=("repeated_tokens", "bigram"), seeds=(0, 1), epochs=6,
                              steps_per_epoch=200, eval_batch=32),
    # an accelerator: depth 1-4, width 64-256, up to 16 heads, every task, 5 seeds
    "paper": HeadsStudyConfig(scales=((1, 4, 64), (2, 4, 64), (2, 8, 128), (3, 8, 128),
                                      (4, 8, 256), (4, 16, 256)),
                              tasks=TASKS, seeds=(0, 1, 2, 3, 4), vocab=128, seq_len=64,
                              min_repeat=16, lr=1e-3, epochs=40, steps_per_epoch=500,
                              scan_steps=100, batch_size=64, eval_batch=256),
}


# ----------------------------------------------------------------------------- overrides
def _parse_field(name: str, text: str):
    types = typing.get_type_hints(HeadsStudyConfig)
    if name not in types:
        raise ConfigError(f"unknown field {name!r} in --set; known fields: {sorted(types)}")
    tp = types[name]
    try:
        if name == "scales":
            return tuple(tuple(int(x) for x in s.split("x")) for s in text.split(",") if s)
        if tp == tuple[str, ...]:
            return tuple(t for t in text.split(",") if t)
        if typing.get_origin(tp) is tuple:
            return tuple(int(t) for t in text.split(",") if t)
        if tp is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return tp(text)
    except ValueError:
        what = "LxHxD[,LxHxD...]" if name == "scales" else str(tp)
        raise ConfigError(f"--set {name}={text!r}: expected {what}") from None


def config_from_args(preset: str, sets: list[str]) -> HeadsStudyConfig:
    """The preset with ``FIELD=VALUE`` overrides (raises :class:`ConfigError`)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: expected one of {sorted(PRESETS)}")
    changes = {}
    for item in sets:
        name, eq, text = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        changes[name] = _parse_field(name, text)
    return dataclasses.replace(PRESETS[preset], **changes)


# ----------------------------------------------------------------------------- running
def cell_name(scale, task: str) -> str:
    layers, heads, width = scale
    return f"L{layers}-H{heads}-D{width}-{task}"


def run_cells(cfg: HeadsStudyConfig, out: Path, *, resume: bool, progress: bool):
    """Trains every (scale, task) cell: ``(entries, patterns, status)``."""
    from sparsejax.train import transformer as ttf

    entries, patterns = [], {}
    for scale in cfg.scales:
        for task in cfg.tasks:
            name = cell_name(scale, task)
            res = ttf.train(cfg.model_config(scale), cfg.task_config(task), cfg.train_config(),
                            out / RUNS_DIR / name, resume=resume, progress=progress, name=name)
            if res.status != "done":
                return entries, patterns, res.status
            for i, seed in enumerate(cfg.seeds):
                entries.append(model_entry(scale, task, seed, i, res, cfg))
                patterns[(scale, task, seed)] = np.asarray(res.final["example_patterns"][i])
    return entries, patterns, "done"


def model_entry(scale, task, seed, i, res, cfg: HeadsStudyConfig) -> dict:
    """One trained model's summary: final head metrics, labels, curves, onset step."""
    layers, heads, width = scale
    final = {k: np.asarray(res.final[k][i]) for k in res.final if k != "example_patterns"}
    labels = [[LABELS[j] for j in row] for row in final["label"].tolist()]
    recs = sorted((r for r in res.records if r["seed"] == seed), key=lambda r: r["step"])
    steps = [r["step"] for r in recs]
    curve = {m: [float(np.max(r["heads"][m])) for r in recs]
             for m in ("induction", "previous_token", "duplicate", "ground_truth")}
    spec_curve = [float(np.mean([LABELS[j] in SPECIALISED for j in np.ravel(r["heads"]["label"])]))
                  for r in recs]
    onset = next((s for s, v in zip(steps, curve["induction"]) if v >= INDUCTION_THRESHOLD),
                 None)
    flat = [lab for row in labels for lab in row]
    abl = final["ablation_importance"]
    return {
        "layers": layers, "heads": heads, "width": width, "task": task, "seed": seed,
        "max_induction_score": float(final["induction"].max()),
        "max_previous_token_score": float(final["previous_token"].max()),
        "max_ground_truth_accuracy": float(final["ground_truth"].max()),
        "specialised_fraction": float(np.mean([lab in SPECIALISED for lab in flat])),
        "label_counts": {lab: flat.count(lab) for lab in LABELS},
        "induction_onset_step": onset,
        "ctx_loss": float(final["ctx_loss"]),
        "labels": labels,
        "metrics": {k: np.round(v, 6).tolist() for k, v in final.items()
                    if k not in ("label", "ctx_loss")},
        "ablation_by_label": {lab: float(np.mean(abl[final["label"] == j]))
                              for j, lab in enumerate(LABELS) if np.any(final["label"] == j)},
        "curves": {"steps": steps, **curve, "specialised_fraction": spec_curve},
    }


# A model has learnt its task when its in-context loss is below this fraction of chance
# (log vocab nats, uniform guessing); a task no model learnt is not evidence about heads.
LEARNT_FRACTION_OF_CHANCE = 0.9


def learnt(ctx_loss: float, vocab: int) -> bool:
    return ctx_loss < LEARNT_FRACTION_OF_CHANCE * math.log(vocab)


def checks(entries: list[dict]) -> dict:
    """The issue's induction checks over the models on :data:`INDUCTION_TASK`."""
    two = [e for e in entries if e["layers"] == 2 and e["task"] == INDUCTION_TASK]
    one = [e for e in entries if e["layers"] == 1]
    return {
        "two_layer_models": len(two),
        "two_layer_min_of_max_induction": min((e["max_induction_score"] for e in two),
                                              default=None),
        "two_layer_ok": bool(two) and all(e["max_induction_score"] >= TWO_LAYER_INDUCTION_MIN
                                          for e in two),
        "one_layer_models": len(one),
        "one_layer_max_induction": max((e["max_induction_score"] for e in one), default=None),
        "one_layer_ok": all(e["max_induction_score"] <= ONE_LAYER_INDUCTION_MAX for e in one),
    }


def by_scale(entries: list[dict], vocab: int) -> list[dict]:
    """Per (scale, task): means over seeds of the specialised fraction, onset, scores, and
    how many seeds learnt the task (:func:`learnt`)."""
    rows = {}
    for e in entries:
        rows.setdefault((e["layers"], e["heads"], e["width"], e["task"]), []).append(e)
    out = []
    for (layers, heads, width, task), es in rows.items():
        onsets = [e["induction_onset_step"] for e in es]
        formed = [o for o in onsets if o is not None]
        out.append({
            "layers": layers, "heads": heads, "width": width, "task": task, "seeds": len(es),
            "heads_total": layers * heads,
            "specialised_fraction": float(np.mean([e["specialised_fraction"] for e in es])),
            "specialised_fraction_sd": float(np.std([e["specialised_fraction"] for e in es])),
            "max_induction_score": float(np.mean([e["max_induction_score"] for e in es])),
            "induction_formed": f"{len(formed)}/{len(es)}",
            "induction_onset_step": float(np.mean(formed)) if formed else None,
            "ctx_loss": float(np.mean([e["ctx_loss"] for e in es])),
            "learnt": sum(learnt(e["ctx_loss"], vocab) for e in es),
        })
    return out


def ablation_table(entries: list[dict]) -> list[dict]:
    """Mean ablation importance (nats) of the heads of each label, per task."""
    acc = {}
    for e in entries:
        abl = np.asarray(e["metrics"]["ablation_importance"])
        for j, lab in enumerate(LABELS):
            mask = np.asarray([[x == lab for x in row] for row in e["labels"]])
            if mask.any():
                acc.setdefault((e["task"], lab), []).extend(abl[mask].tolist())
    return [{"task": t, "label": lab, "heads": len(v), "mean_ablation_nats": float(np.mean(v)),
             "max_ablation_nats": float(np.max(v))} for (t, lab), v in sorted(acc.items())]


# ----------------------------------------------------------------------------- report
def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def answer(res: dict) -> str:
    """The paragraph on the seed's question, from the numbers (per task, multi-layer
    models ordered by their number of heads)."""
    parts, trends = [], []
    chance = math.log(res["config"]["vocab"])
    for task in res["config"]["tasks"]:
        rows = sorted((r for r in res["by_scale"] if r["layers"] >= 2 and r["task"] == task),
                      key=lambda r: (r["heads_total"], r["width"]))
        if rows and not any(r.get("learnt") for r in rows):
            parts.append(f"On `{task}` no multi-layer model learnt the task (in-context loss "
                         f"{min(r['ctx_loss'] for r in rows):.2f} nats at best, chance "
                         f"{chance:.2f}): not evidence, left out of the answer.")
            continue
        if len(rows) < 2:
            continue
        fr = [r["specialised_fraction"] for r in rows]
        trend = ("rises" if fr[-1] - fr[0] > 0.1 else "falls" if fr[0] - fr[-1] > 0.1
                 else "stays roughly flat")
        trends.append(trend)
        seq = ", ".join(f"{r['heads_total']} heads (L{r['layers']} D{r['width']}): "
                        f"{r['specialised_fraction']:.2f} = "
                        f"{r['specialised_fraction'] * r['heads_total']:.1f} heads"
                        for r in rows)
        onset = [f"{r['heads_total']} heads: step {r['induction_onset_step']:.0f} "
                 f"({r['induction_formed']} seeds)" for r in rows
                 if r["induction_onset_step"] is not None]
        parts.append(f"On `{task}` the fraction of labelled heads {trend} with scale ({seq})"
                     + (f"; induction heads formed at {', '.join(onset)}" if onset else "")
                     + ".")
    if not parts:
        return ("Fewer than two multi-layer scales were trained per task, so this run cannot "
                "say how head specialisation changes with scale.")
    verdict = ("larger models here have proportionally more labelled heads"
               if trends and all(t == "rises" for t in trends) else
               "larger models here do not have proportionally more labelled heads "
               "(they may have more in number, since they have more heads)")
    return (" ".join(parts) + f" So, measured this way, {verdict}. Onset steps have the "
            f"resolution of one evaluation every {res['config']['steps_per_epoch']} steps. "
            "What this does not show: these are toy tasks that need one or two circuits, so "
            "extra heads have little more to specialise in; the scales span one order of "
            "magnitude at most, on few seeds; the labels rest on fixed thresholds (stated "
            "below) over one evaluation batch; and a head can matter without a label, or carry "
            "a label without mattering (see the ablation table). Whether language-model scale "
            "brings proportionally more interpretable heads is not tested here.")


def report_md(res: dict) -> str:
    c, ch = res["config"], res["checks"]
    lines = [
        f"# Attention heads across scale: preset `{res['preset']}`",
        "",
        f"Command: `{res['command']}`  ",
        f"Device: {res['device']}; wall time {res['wall_s']:.0f} s; "
        f"{c['epochs']} evaluations x {c['steps_per_epoch']} steps, batch {c['batch_size']}, "
        f"Adam lr {c['lr']}; seeds {c['seeds']}.",
        "",
        "## Checks",
        "",
        f"- every two-layer model on `{INDUCTION_TASK}` has a head with induction score >= "
        f"{TWO_LAYER_INDUCTION_MIN}: **{'yes' if ch['two_layer_ok'] else 'NO'}** "
        f"({ch['two_layer_models']} models, lowest max score "
        f"{_fmt(ch['two_layer_min_of_max_induction'])})",
        f"- one-layer control (an induction head needs a previous-token head in an earlier "
        f"layer; Olsson et al. 2022): no head above {ONE_LAYER_INDUCTION_MAX}: "
        f"**{'yes' if ch['one_layer_ok'] else 'NO'}** ({ch['one_layer_models']} models, "
        f"highest score {_fmt(ch['one_layer_max_induction'])})",
        "",
        "## Specialisation against scale (means over seeds)",
        "",
        "| layers | heads | width | task | seeds | specialised fraction (sd) | max induction "
        "| induction formed | onset step | in-context loss | learnt the task |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["by_scale"]:
        lines.append(f"| {r['layers']} | {r['heads']} | {r['width']} | {r['task']} | "
                     f"{r['seeds']} | {r['specialised_fraction']:.3f} "
                     f"({r['specialised_fraction_sd']:.3f}) | {r['max_induction_score']:.3f} | "
                     f"{r['induction_formed']} | {_fmt(r['induction_onset_step'], '.0f')} | "
                     f"{r['ctx_loss']:.3f} | {r['learnt']}/{r['seeds']}"
                     + ("" if r["learnt"] else " (**not evidence**)") + " |")
    lines += ["", f"Learnt: in-context loss below {LEARNT_FRACTION_OF_CHANCE} x chance "
              f"(log {c['vocab']} = {math.log(c['vocab']):.2f} nats).",
              "", "## Every model", "",
              "| layers | heads | width | task | seed | max induction | max prev-token | "
              "max ground-truth acc | labels | onset step |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in res["heads"]:
        labs = ", ".join(f"{k} {v}" for k, v in e["label_counts"].items() if v)
        lines.append(f"| {e['layers']} | {e['heads']} | {e['width']} | {e['task']} | "
                     f"{e['seed']} | {e['max_induction_score']:.3f} | "
                     f"{e['max_previous_token_score']:.3f} | "
                     f"{e['max_ground_truth_accuracy']:.3f} | {labs} | "
                     f"{_fmt(e['induction_onset_step'], 'd')} |")
    lines += ["", "## Ablation importance of labelled heads", "",
              "Loss increase (nats, in-context positions) when one head is mean-ablated "
              "(its output replaced by its mean over the evaluation batch, per position).", "",
              "| task | label | heads | mean | max |", "|---|---|---|---|---|"]
    for r in res["ablation"]:
        lines.append(f"| {r['task']} | {r['label']} | {r['heads']} | "
                     f"{r['mean_ablation_nats']:.3f} | {r['max_ablation_nats']:.3f} |")
    lines += [
        "", "## Do larger models grow more interpretable heads?", "", res["answer"], "",
        "## Choices", "",
        f"- Models: decoder-only, pre-LayerNorm, {'with' if c['mlp'] else 'attention-only, no'} "
        f"MLPs, {c['positions']} positions, vocabulary {c['vocab']}, context {c['seq_len']}.",
        f"- `repeated_tokens`: uniform random tokens whose last n (n uniform in "
        f"[{c['min_repeat']}, {c['seq_len'] // 2}]) repeat the n before them; a variable n so "
        "that no fixed positional offset solves the task (with n fixed at T/2 a one-layer "
        "model scored above 0.9 by attending to t - T/2 + 1). `bigram`: Bietti et al. (2023) "
        "triggers with per-sequence outputs. Batches drawn on the device, fresh each step.",
        f"- Labels (first test passed): induction score >= {INDUCTION_THRESHOLD}, previous-token "
        f">= {PREVIOUS_TOKEN_THRESHOLD}, duplicate >= {DUPLICATE_THRESHOLD}, ground-truth "
        f"accuracy >= {GROUND_TRUTH_THRESHOLD}, positional score >= {POSITIONAL_THRESHOLD}, "
        "else other. Specialised = any label but other. Scores on a fixed evaluation batch of "
        f"{c['eval_batch']} sequences; onset = the first evaluation with a head at induction "
        f"score >= {INDUCTION_THRESHOLD}.",
        "- Gradient importance (in results.json): Michel et al. (2019), the mean over "
        "sequences of |dL/dm_h| at m = 1, where a masked head writes m o_h + (1 - m) "
        "mean(o_h): the first-order estimate of the mean-ablation change.",
        "",
        "![attention patterns of labelled heads](heads_patterns.png)",
        "",
        "![score curves over training](heads_curves.png)",
        "",
        "![specialisation against scale](heads_scale.png)",
        "",
    ]
    return "\n".join(lines)


def plots(res: dict, patterns: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsejax.viz.grids import save_figure

    # attention patterns: per (scale, task) of the first seed, the first head of each label
    picks = []
    for e in res["heads"]:
        if e["seed"] != res["config"]["seeds"][0]:
            continue
        seen = set()
        for l, row in enumerate(e["labels"]):
            for h, lab in enumerate(row):
                if lab != "other" and lab not in seen:
                    seen.add(lab)
                    key = ((e["layers"], e["heads"], e["width"]), e["task"], e["seed"])
                    picks.append((f"L{e['layers']}H{e['heads']}D{e['width']} {e['task'][:8]}\n"
                                  f"l{l}h{h} {lab}", patterns[key][l, h]))
    picks = picks[:16] or [("no labelled head", np.zeros((2, 2)))]
    n = len(picks)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, A) in zip(axes.ravel(), picks):
        ax.imshow(A, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
    fig.suptitle("attention patterns (query rows, key columns), first evaluation sequence")
    fig.tight_layout()
    save_figure(fig, out / "heads_patterns.png")

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    scales = sorted({(e["layers"], e["heads"], e["width"]) for e in res["heads"]})
    for e in res["heads"]:
        sc = (e["layers"], e["heads"], e["width"])
        color = cmap(scales.index(sc) / max(1, len(scales) - 1))
        ls = "-" if e["task"] == INDUCTION_TASK else "--"
        first = e["seed"] == res["config"]["seeds"][0]
        label = f"L{sc[0]}H{sc[1]}D{sc[2]} {e['task']}" if first else None
        a.plot(e["curves"]["steps"], e["curves"]["induction"], ls, color=color, label=label)
        b.plot(e["curves"]["steps"], e["curves"]["specialised_fraction"], ls, color=color)
    a.axhline(INDUCTION_THRESHOLD, color="k", lw=0.8, ls=":")
    a.set(xlabel="step", ylabel="max induction score", title="formation", ylim=(0, 1))
    b.set(xlabel="step", ylabel="fraction of heads labelled", title="specialisation",
          ylim=(0, 1))
    a.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "heads_curves.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for task in res["config"]["tasks"]:
        rows = sorted((r for r in res["by_scale"] if r["task"] == task),
                      key=lambda r: (r["heads_total"], r["width"]))
        ax.errorbar([r["heads_total"] for r in rows], [r["specialised_fraction"] for r in rows],
                    yerr=[r["specialised_fraction_sd"] for r in rows], marker="o", label=task,
                    capsize=3)
    ax.set(xlabel="heads in the model (layers x heads)", ylabel="fraction specialised",
           title="specialisation against scale")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "heads_scale.png")


# ----------------------------------------------------------------------------- main
def execute(cfg: HeadsStudyConfig, preset: str, out: Path, *, resume: bool, progress: bool,
            command: str) -> dict | None:
    """Runs (or resumes) the study; the results dict, or None if it was interrupted."""
    from sparsejax.train.mesh import device_label

    with DirLock(out):  # one process per study directory
        clock = WallTime(out, resume=resume)
        entries, patterns, status = run_cells(cfg, out, resume=resume, progress=progress)
        if status != "done":
            return None
        config = dataclasses.asdict(cfg)
        res = {"study": "heads", "preset": preset, "command": command, "config": config,
               "device": device_label(),
               "wall_s": clock.total(), "heads": entries,
               "by_scale": by_scale(entries, cfg.vocab),
               "ablation": ablation_table(entries), "checks": checks(entries),
               "thresholds": {"induction": INDUCTION_THRESHOLD,
                              "previous_token": PREVIOUS_TOKEN_THRESHOLD,
                              "duplicate": DUPLICATE_THRESHOLD,
                              "ground_truth": GROUND_TRUTH_THRESHOLD,
                              "positional": POSITIONAL_THRESHOLD}}
        res["answer"] = answer(res)
        plots(res, patterns, out)
        write_atomic(out / "results.json", json.dumps(res, indent=1))
        write_atomic(out / "report.md", report_md(res))
        return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments heads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", help=f"one of {sorted(PRESETS)}")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/runs/*/checkpoints")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a preset field (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args.preset, args.set)  # ConfigError: exit 2 before any work
    out = output_path(args.out)
    if args.resume and not (out / RUNS_DIR).is_dir():
        raise FileNotFoundError(f"--resume: no study in {out} (no {RUNS_DIR}/ directory)")
    if not args.resume and (out / RUNS_DIR).exists():
        raise RunExistsError(f"{out} already holds a study; continue it with --resume or "
                             "choose another --out")
    command = "python -m experiments heads " + shlex.join(
        sys.argv[2:] if argv is None else argv)
    res = execute(cfg, args.preset, out, resume=args.resume, progress=not args.no_progress,
                  command=command)
    if res is None:
        print(f"interrupted; continue with: {command} --resume", file=sys.stderr)
        return 130
    ch = res["checks"]
    print(f"[heads] done in {res['wall_s']:.0f} s: {len(res['heads'])} models; two-layer "
          f"induction ok: {ch['two_layer_ok']}, one-layer control ok: {ch['one_layer_ok']}; "
          f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    from experiments.errors import run_cli

    sys.exit(run_cli(main, sys.argv[1:]))
