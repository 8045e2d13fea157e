"""Typed, validated configuration of a hybrid VAE-SAE run, and its presets.

:class:`TrainConfig` is checked in full when it is built (``ConfigError`` names the field,
the value and what was expected), so a bad value never costs a compilation. Each field
states in its metadata what it affects (:data:`AFFECTS`): the compiled program cache and
the resume check read that, not lists of names. Presets of one run (the ``train`` study):

============  =======================================================================
``smoke``     3 epochs x 25 steps, eval on 1,024 samples: a ``train`` run in < 60 s on
              a 2-core CPU, compilation included; k 500 -> 50 over the 3 epochs
``small``     10 epochs x 300 steps, eval on 5,000: minutes on a 2-core CPU;
              k 500 -> 50 over 8 epochs, then held
``paper``     50 epochs, each one pass over the dataset (dSprites 11,520 steps,
              Shapes3D 7,500), eval on 10,000: for accelerators; k 500 -> 50 over 50
============  =======================================================================
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

from sparsejax.data import DATASETS, SOURCE_CHOICES
from sparsejax.metrics.dead_units import DEAD_THRESHOLDS
from sparsejax.models.conv import COMPUTE_DTYPES, CONV_IMPLS
from sparsejax.models.vae import GROUPABLE, METHODS, PENALISED, PLACEMENTS
from sparsejax.ops import IMPLS as TOPK_IMPLS
from sparsejax.sparsity.controller import L1Controller
from sparsejax.sparsity.remedies import RemedyConfig
from sparsejax.sparsity.schedules import KSchedule
from sparsejax.train.errors import ConfigError
from sparsejax.train.seeds import SEED_MAPS, RunSpec

# What a config field affects (its ``metadata["affects"]``):
#   "model":   the parameters' shapes (and so the program): a checkpoint fits only these;
#   "program": the compiled step and evaluator, and so the numbers;
#   "eval":    the compiled evaluator only (the evaluation set and its thresholds): runs
#              differing only in these share one compiled train step within a process;
#   "numbers": the numbers a run computes but not its program (runs differing only in these
#              share one compiled step within a process);
#   "nothing": neither (the run's length, logging, where files are): may change on resume.
AFFECTS = ("model", "program", "eval", "numbers", "nothing")
SPARSE_INITS = ("default", "tied", "subspace")
SPARSE_INPUTS = ("raw", "whiten")
FLOAT32_MAX = 3.4028234663852886e38


def option(default: Any = dataclasses.MISSING, *, affects: str = "program",
           resumable: bool | None = None, **kwargs):
    """A dataclass field whose metadata says what it affects (one of :data:`AFFECTS`) and
    whether a resumed run may change it (default: when it affects nothing; a field such as
    the learning rate changes the numbers from then on, and a user may mean that)."""
    if affects not in AFFECTS:
        raise ValueError(f"affects={affects!r}: expected one of {AFFECTS}")
    resumable = affects == "nothing" if resumable is None else resumable
    return dataclasses.field(default=default,
                             metadata={"affects": affects, "resumable": resumable}, **kwargs)


def resumable_fields(cls) -> tuple[str, ...]:
    """Names of the fields of dataclass ``cls`` that a resumed run may change."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))


def fields_affecting(cls, *kinds: str) -> tuple[str, ...]:
    """Names of the fields of dataclass ``cls`` whose ``affects`` is one of ``kinds``
    (fields without the metadata count as "program")."""
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.metadata.get("affects", "program") in kinds)


def parse_member(name: str) -> tuple[str, int | None]:
    """``(method, fixed k or None)`` of a group member: ``"l1"`` follows the schedule,
    ``"topk@500"`` is Top-k held at k = 500 from its first step (at k = N with the ReLU:
    the ReLU, no penalty). Raises ConfigError on a malformed name."""
    method, at, k = name.partition("@")
    if not at:
        return name, None
    if not k.isdigit():
        raise ConfigError(f"group member {name!r}: expected <method>@<k> with k an integer")
    return method, int(k)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (or S runs differing only by seed), fully specified.

    Model: ``method`` (``topk`` | ``l1`` | ``dense``), ``placement`` of the sparse layer,
    ``num_units`` N, ``num_latents`` L. Loss: ``beta`` (KL), ``sae_weight`` (lambda).
    Sparsity: ``schedule`` gives the target k per epoch (Top-k: the k used; L1: the L0 the
    ``controller`` steers towards; dense: logged only). Data: ``dataset`` from ``source``.
    Optimiser: Adam(``learning_rate``, 0.9, 0.999, 1e-8) as disentanglement_lib.
    Seeds: ``num_seeds`` runs with seeds ``seed, seed + 1, ...`` train in one program
    (``seed_map``: vmapped, or unrolled side by side; "auto" unrolls on CPU).
    Groups: ``group`` names further members that train in the same program, each with the
    same seeds (:attr:`runs`: ``method``'s seeds first). A member is a method or a method
    held at a fixed k from its first step (``"topk@50"``; :func:`parse_member`). Top-k's
    graph serves them: the L1 arm is Top-k at k = N with its penalty switched on per run
    (ReLU(TopK(pre, N)) is ReLU(pre)), and each run's k is its own, so
    ``method="topk", group=("l1", "topk@500", "topk@50")`` trains Top-k, L1, the ReLU
    without a penalty and Top-k at a fixed k = 50 as one vmapped model on an accelerator,
    each run computing what it would alone.
    Implementations: ``topk_impl`` (:func:`sparsejax.ops.topk`), ``conv_impl``
    (:mod:`sparsejax.models.conv`); "auto" picks per backend. ``compute_dtype``: of the
    encoder's and decoder's convs and matmuls (``bfloat16``: mixed precision, with float32
    parameters, Adam state, loss and Top-k selection). ``scan_steps``: optimiser steps per
    dispatch (a ``lax.scan`` of the step, per-step k carried in; device-rendered data),
    the same numbers for any value up to float32 rounding (a loop body fuses apart).
    Remedies against dead units (:mod:`sparsejax.sparsity.remedies`): ``remedy`` (AuxK,
    resampling, JumpReLU's pre-activation loss, sparsifier settings), ``sparse_init`` (the
    sparse layer at a run's step 0: as built, ``tied`` encoder = decoder transpose, or
    ``subspace`` inside its input's active subspace) and ``sparse_input`` (``raw`` or
    ``whiten``: PCA whitening estimated at step 0).
    """

    dataset: str = option("dsprites", affects="model")
    method: str = option("topk", affects="model")
    source: str = option("auto", affects="nothing")  # "auto" resolves the same on resume
    data_dir: str | None = option(None, affects="nothing")
    placement: str = option("hidden", affects="model")
    num_units: int = option(500, affects="model")
    num_latents: int = option(10, affects="model")
    beta: float = 1.0
    sae_weight: float = 1.0
    schedule: KSchedule = option(KSchedule(), affects="numbers")  # k is a traced argument
    controller: L1Controller = L1Controller()
    remedy: RemedyConfig = RemedyConfig()
    # data-dependent initialisation at a run's step 0: the numbers change, not the program
    sparse_init: str = option("default", affects="numbers")
    sparse_input: str = option("raw", affects="model")
    topk_impl: str = "auto"
    topk_relu: bool = True  # Top-k: ReLU(TopK(pre)); False: TopK(pre), exactly k active
    conv_impl: str = "auto"
    compute_dtype: str = "float32"
    seed_map: str = "auto"  # how S seeds share the program: vmap | unroll (auto: unroll on CPU)
    # may change on resume (e.g. lower after a divergence): the numbers differ from then on
    learning_rate: float = option(1e-4, resumable=True)
    batch_size: int = 64
    epochs: int = option(50, affects="nothing")
    steps_per_epoch: int | None = option(None, affects="numbers")  # None: one pass over the grid
    eval_size: int = option(10_000, affects="eval")
    # the last epoch's evaluation set (None: eval_size)
    final_eval_size: int | None = option(None, affects="eval")
    eval_batch: int = option(1_000, affects="eval")
    eval_seed: int = option(0, affects="eval")
    thresholds: tuple[float, ...] = option(DEAD_THRESHOLDS, affects="eval")
    seed: int = option(0, affects="numbers")
    num_seeds: int = 1
    # members sharing the program with `method` (GROUPABLE methods, <method>@<k>), each
    # with num_seeds seeds
    group: tuple[str, ...] = option((), affects="model")
    log_every: int = option(50, affects="nothing")
    keep_checkpoints: int = option(2, affects="nothing")
    # optimiser steps per dispatch (a lax.scan on the device; device-rendered data only):
    # the same numbers (to float32 rounding) for any value, so a resumed run may change it
    scan_steps: int = option(1, resumable=True)

    def __post_init__(self):
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("method", self.method, METHODS)
        _check_choice("source", self.source, SOURCE_CHOICES)
        _check_choice("placement", self.placement, PLACEMENTS)
        _check_choice("topk_impl", self.topk_impl, TOPK_IMPLS)
        _check_choice("conv_impl", self.conv_impl, CONV_IMPLS)
        _check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        _check_choice("seed_map", self.seed_map, SEED_MAPS)
        _check_choice("sparse_init", self.sparse_init, SPARSE_INITS)
        _check_choice("sparse_input", self.sparse_input, SPARSE_INPUTS)
        for name in ("num_units", "num_latents", "batch_size", "epochs", "eval_size",
                     "eval_batch", "num_seeds", "log_every", "keep_checkpoints",
                     "scan_steps"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("steps_per_epoch", "final_eval_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low=1)
        if not isinstance(self.topk_relu, bool):
            raise ConfigError(f"topk_relu must be true or false, got {self.topk_relu!r}")
        for name in ("seed", "eval_seed"):
            _check_int(name, getattr(self, name), low=0)
        for name in ("beta", "sae_weight"):
            _check_float(name, getattr(self, name), low=0.0)
        _check_float("learning_rate", self.learning_rate, low=0.0, strict=True)
        if self.learning_rate > FLOAT32_MAX:
            raise ConfigError(f"learning_rate = {self.learning_rate} overflows float32 (the "
                              f"parameters' dtype): expected at most {FLOAT32_MAX:.3g}")
        if not isinstance(self.schedule, KSchedule):
            raise ConfigError(f"schedule must be a KSchedule, got {type(self.schedule).__name__}")
        if not isinstance(self.controller, L1Controller):
            raise ConfigError(
                f"controller must be an L1Controller, got {type(self.controller).__name__}")
        if not isinstance(self.remedy, RemedyConfig):
            raise ConfigError(f"remedy must be a RemedyConfig, got {type(self.remedy).__name__}")
        if self.remedy.k_aux > self.num_units:
            raise ConfigError(f"remedy.k_aux = {self.remedy.k_aux} exceeds num_units = "
                              f"{self.num_units}")
        if (self.remedy.k_aux or self.remedy.resample_every or self.sparse_init != "default"
                or self.sparse_input != "raw") and not self.sparse:
            raise ConfigError("remedies (remedy.k_aux, remedy.resample_every, sparse_init, "
                              "sparse_input) need a sparse layer: method is 'dense'")
        if self.sparse_init == "subspace" and self.sparse_input == "whiten":
            raise ConfigError("sparse_init='subspace' with sparse_input='whiten' is not "
                              "supported: whitening already spreads the input over its subspace")
        if self.remedy.preact_coef and self.method != "jumprelu":
            raise ConfigError(f"remedy.preact_coef is JumpReLU's pre-activation loss: method "
                              f"must be 'jumprelu', got {self.method!r}")
        for end in ("start", "end"):
            k = getattr(self.schedule, end)
            if not 1 <= k <= self.num_units:
                raise ConfigError(f"schedule.{end} = {k} is out of range: k must be within "
                                  f"1..num_units = 1..{self.num_units}")
        self._check_group()
        ts = tuple(self.thresholds)
        if not ts or any(not isinstance(t, (int, float)) or not t >= 0 or not math.isfinite(t)
                         for t in ts):
            raise ConfigError(f"thresholds must be finite numbers >= 0, got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in ts))

    def _check_group(self):
        group = tuple(self.group) if isinstance(self.group, (list, tuple)) else None
        if group is None or any(not isinstance(m, str) for m in group):
            raise ConfigError(f"group must be a list of member names (a method, or "
                              f"<method>@<k>), got {self.group!r}")
        object.__setattr__(self, "group", group)
        if not group:
            return
        if self.method not in GROUPABLE:
            raise ConfigError(f"group={list(group)} needs a method whose graph serves it: "
                              f"method must be one of {sorted(GROUPABLE)}, got {self.method!r}")
        for m in group:
            method, k = parse_member(m)
            if method not in (self.method, *GROUPABLE[self.method]):
                raise ConfigError(f"group member {m!r}: expected one of "
                                  f"{list(GROUPABLE[self.method])} (the methods "
                                  f"{self.method!r}'s graph computes exactly), or "
                                  f"{self.method!r} or one of them at a fixed k "
                                  f"('{self.method}@<k>')")
            if k is not None and not 1 <= k <= self.num_units:
                raise ConfigError(f"group member {m!r}: its k must be within [1, "
                                  f"num_units={self.num_units}]")
        if len(set(self.members)) < len(self.members):
            raise ConfigError(f"group={list(group)}: expected distinct members, none the "
                              f"method {self.method!r} itself")
        if not self.topk_relu:
            raise ConfigError(f"group={list(group)} needs topk_relu=true: the L1 arm's "
                              "ReLU is Top-k at k = N only with the ReLU")
        if self.remedy.resample_every:
            raise ConfigError("remedy.resample_every is not supported in a group (group="
                              f"{list(group)}): train the arms apart")

    # -- derived ---------------------------------------------------------------------------
    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.num_seeds))

    @property
    def members(self) -> tuple[str, ...]:
        """The program's members: ``method``, then each ``group`` member."""
        return (self.method, *self.group)

    @property
    def runs(self) -> tuple[tuple[str, int], ...]:
        """``(member, seed)`` of every run of the program, in state order: ``method``'s
        seeds, then each ``group`` member's."""
        return tuple((m, s) for m in self.members for s in self.seeds)

    @property
    def num_runs(self) -> int:
        """S, the length of the train state's leading axis."""
        return len(self.runs)

    @property
    def run_names(self) -> tuple[str, ...]:
        """A name per run (``seed_<s>``; in a group ``<member>_seed_<s>``): its
        TensorBoard directory and the ``run`` of its records."""
        if not self.group:
            return tuple(f"seed_{s}" for _, s in self.runs)
        return tuple(f"{m}_seed_{s}" for m, s in self.runs)

    @property
    def run_specs(self) -> tuple[RunSpec, ...]:
        """Per run, what sets it apart from the program's other runs beside its seed: its
        penalty flag (``PENALISED`` methods) and its fixed k (None: the schedule's)."""
        out = []
        for m, _ in self.runs:
            method, k = parse_member(m)
            out.append(RunSpec(method in PENALISED, k))
        return tuple(out)

    @property
    def penalised_runs(self) -> tuple[bool, ...]:
        """Per run, whether the L1 controller's penalty is on (``PENALISED`` methods)."""
        return tuple(bool(r.pen) for r in self.run_specs)

    def run_k(self, i: int, k: int) -> int:
        """Run ``i``'s target k when the schedule's is ``k``: its member's fixed k, if any."""
        fixed = self.run_specs[i].k
        return int(k) if fixed is None else fixed

    @property
    def sparse(self) -> bool:
        return self.method != "dense"

    @property
    def last_eval_size(self) -> int:
        """Samples of the last epoch's evaluation (``final_eval_size`` or ``eval_size``)."""
        return self.final_eval_size or self.eval_size

    def eval_size_at(self, epoch: int) -> int:
        """Samples of epoch ``epoch``'s evaluation."""
        return self.last_eval_size if epoch == self.epochs - 1 else self.eval_size

    def k_at(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> int:
        """The schedule's k at one step: ``schedule`` at the fractional epoch
        ``epoch + step_in_epoch / steps_per_epoch`` (k moves every step)."""
        return int(self.schedule(epoch + step_in_epoch / steps_per_epoch))

    def resolved_steps_per_epoch(self, dataset_size: int) -> int:
        """Steps of one epoch: ``steps_per_epoch``, or one pass over ``dataset_size`` images."""
        return self.steps_per_epoch or max(1, dataset_size // self.batch_size)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied (nested: ``schedule={"end": 20}`` or a KSchedule)."""
        return from_dict({**to_dict(self), **_nested_changes(self, changes)})

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=2, sort_keys=True)

    def program_key(self, *, evaluator: bool = True) -> tuple:
        """The fields that shape the compiled programs (``evaluator=False``: the train
        step's alone, without the evaluation set's), as a hashable key."""
        d = to_dict(self)
        kinds = ("model", "program", "eval") if evaluator else ("model", "program")
        return tuple((name, json.dumps(d[name], sort_keys=True))
                     for name in fields_affecting(TrainConfig, *kinds))


# ------------------------------------------------------------------------- dict round trip
_NESTED = {"schedule": KSchedule, "controller": L1Controller, "remedy": RemedyConfig}


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A JSON-ready dict (nested dataclasses as dicts, tuples as lists)."""
    d = dataclasses.asdict(cfg)
    d["thresholds"], d["group"] = list(d["thresholds"]), list(d["group"])
    return d


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`to_dict`; unknown keys are an error."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(fields)}")
    d = dict(d)
    for name, cls in _NESTED.items():
        v = d.get(name)
        if isinstance(v, dict):
            sub = {f.name for f in dataclasses.fields(cls)}
            bad = sorted(set(v) - sub)
            if bad:
                raise ConfigError(f"unknown {name} field(s) {bad}; known: {sorted(sub)}")
            try:
                d[name] = cls(**v)
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from None
    if "thresholds" in d and isinstance(d["thresholds"], list):
        d["thresholds"] = tuple(d["thresholds"])
    return TrainConfig(**d)


def _nested_changes(cfg: TrainConfig, changes: dict) -> dict:
    out = {}
    for k, v in changes.items():
        if k in _NESTED and isinstance(v, dict):
            out[k] = {**dataclasses.asdict(getattr(cfg, k)), **v}
        elif k in _NESTED and dataclasses.is_dataclass(v):
            out[k] = dataclasses.asdict(v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(epochs=3, steps_per_epoch=25, eval_size=1024, eval_batch=512,
                  schedule=dict(length=3), log_every=10),
    "small": dict(epochs=10, steps_per_epoch=300, eval_size=5000, eval_batch=1000,
                  schedule=dict(length=8), log_every=50),
    "paper": dict(epochs=50, steps_per_epoch=None, eval_size=10_000, eval_batch=1000,
                  schedule=dict(length=50), log_every=200),
}


def preset(name: str, **overrides) -> TrainConfig:
    """The config of preset ``name`` (``smoke``, ``small``, ``paper``) with ``overrides``.

    Overrides take field names of :class:`TrainConfig`; ``schedule`` and ``controller``
    accept a partial dict (``schedule={"end": 20}``) or a full object.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    base = TrainConfig()
    merged = _nested_changes(base, PRESETS[name])
    cfg = from_dict({**to_dict(base), **merged})
    return cfg.replace(**overrides) if overrides else cfg


def parse_value(field: str, text: str) -> Any:
    """A ``--set field=value`` string as the field's type (dotted names for nested fields)."""
    top, _, sub = field.partition(".")
    types = typing.get_type_hints(TrainConfig)
    if top not in types:
        raise ConfigError(f"unknown config field {top!r}; known fields: {sorted(types)}")
    if sub:
        if top not in _NESTED:
            raise ConfigError(f"config field {top!r} has no sub-fields")
        sub_types = typing.get_type_hints(_NESTED[top])
        if sub not in sub_types:
            raise ConfigError(f"unknown {top} field {sub!r}; known: {sorted(sub_types)}")
        return _parse(sub_types[sub], text, field)
    return _parse(types[top], text, field)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` items as overrides for :meth:`TrainConfig.replace` (dotted
    names give partial nested dicts: ``schedule.kind=cosine`` -> ``{"schedule": {...}}``)."""
    overrides: dict[str, Any] = {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        value = parse_value(name, text)
        top, _, sub = name.partition(".")
        if sub:
            overrides.setdefault(top, {})[sub] = value
        else:
            overrides[top] = value
    return overrides


def _parse(tp, text: str, field: str):
    try:
        if tp is int or tp == (int | None):
            return None if text.lower() == "none" and tp != int else int(text)
        if tp is float:
            return float(text)
        if tp == (str | None):
            return None if text.lower() == "none" else text
        if tp is str:
            return text
        if typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            return tuple(item(t) for t in text.split(",") if t)
    except ValueError:
        raise ConfigError(f"{field}={text!r}: expected a value of type {tp}") from None
    raise ConfigError(f"{field} cannot be set from the command line")


# ------------------------------------------------------------------------- checks
def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: expected one of {list(choices)}")


def _check_int(name, value, *, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _check_float(name, value, *, low, strict=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < low or (strict and value == low):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")
