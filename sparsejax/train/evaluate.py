"""End-of-epoch evaluation on a fixed evaluation set, and the metrics hook.

The evaluation set is ``cfg.eval_size`` factor tuples drawn once from ``eval_seed`` (the
same for every epoch, seed and method, so curves are comparable). With a device-rendered
dataset the set stays on the device and the whole pass is one program (a ``lax.scan`` over
chunks that renders each on the device), fetched once; host-read images go chunk by
chunk. One pass computes, per run: the latent means, the sparse codes, the
per-unit firing counts at every threshold, and the loss terms (z sampled with fixed
noise). A pluggable ``metrics_fn(RunEval) -> dict`` then adds figures to the epoch record;
:func:`default_metrics` uses whatever :mod:`sparsejax.metrics` provides.
"""

from __future__ import annotations

# Shape letters: S runs (seeds), n evaluation samples, F factors, L latents, N sparse
# units, T thresholds.

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sparsejax.data import FactorDataset
from sparsejax.metrics.dead_units import tau_key
from sparsejax.models.vae import loss_terms
from sparsejax.train.config import TrainConfig
from sparsejax.train.hybrid import HybridModel
from sparsejax.train.mesh import batch_sharding, global_array, replicated
from sparsejax.train.seeds import over_runs

EVAL_TERMS = ("recon", "kl", "sae", "l1", "l0", "penalty")


@dataclasses.dataclass
class RunEval:
    """One run's evaluation (what a metrics hook receives). Arrays are numpy.

    Attributes:
      factors: int32 ``[n, F]`` ground-truth factors of the evaluation set.
      mu: float32 ``[n, L]`` latent means.
      h: float32 ``[n, N]`` sparse codes (None for the dense VAE).
      counts: int ``[T, N]`` number of examples with h > tau, per threshold (``[T, 0]`` dense).
      thresholds: the T thresholds tau.
      terms: mean loss terms over the set (``recon``, ``kl``, ``sae``, ``l1``, ``l0``,
        ``penalty``; sparse models also ``sae_fvu``, the SAE's fraction of variance
        unexplained of its target on the set).
      k: the k the pass used.
      factor_names: the dataset's factor names (for labelled per-factor figures).
    """

    factors: np.ndarray
    mu: np.ndarray
    h: np.ndarray | None
    counts: np.ndarray
    thresholds: tuple[float, ...]
    terms: dict[str, float]
    k: int
    factor_names: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return self.factors.shape[0]

    def dead_fraction(self) -> dict[str, float]:
        """Fraction of units that never exceed tau on the set, per threshold
        (keyed by :func:`sparsejax.metrics.tau_key`)."""
        if self.counts.shape[1] == 0:
            return {}
        return {tau_key(t): float(np.mean(c == 0)) for t, c in zip(self.thresholds, self.counts)}


@dataclasses.dataclass
class EvalResult:
    """The evaluation of all S runs (leading axis S on mu, h, counts, terms)."""

    factors: np.ndarray
    mu: np.ndarray
    h: np.ndarray | None
    counts: np.ndarray
    thresholds: tuple[float, ...]
    terms: dict[str, np.ndarray]
    k: int
    factor_names: tuple[str, ...] = ()

    def run(self, i: int) -> RunEval:
        return RunEval(self.factors, self.mu[i], None if self.h is None else self.h[i],
                       self.counts[i], self.thresholds,
                       {n: float(v[i]) for n, v in self.terms.items()}, self.k,
                       self.factor_names)


def eval_factors(dataset: FactorDataset, cfg: TrainConfig, n: int | None = None
                 ) -> np.ndarray:
    """A fixed evaluation set: int32 ``[n, F]`` (default ``eval_size``) drawn from
    ``eval_seed``."""
    n = cfg.eval_size if n is None else n
    return np.asarray(dataset.sample_factors(jax.random.key(cfg.eval_seed), n))


class _EvalSet(NamedTuple):
    factors: np.ndarray  # int32 [n, F]
    factors_p: np.ndarray  # int32 [chunks * chunk, F], padded with row 0
    mask_p: np.ndarray  # float32 [chunks * chunk]: 1 for real rows
    eps_p: np.ndarray  # float32 [chunks * chunk, L]: fixed reparameterisation noise
    chunk: int
    num_chunks: int


def _eval_set(dataset: FactorDataset, cfg: TrainConfig, n: int, ndev: int) -> _EvalSet:
    factors = eval_factors(dataset, cfg, n)
    chunk = -(-min(cfg.eval_batch, n) // ndev) * ndev  # a multiple of the device count
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n
    # padded rows repeat row 0 and are masked out of every sum
    factors_p = np.concatenate([factors, np.repeat(factors[:1], pad, 0)])
    mask_p = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    eps_p = np.asarray(jax.random.normal(jax.random.key(cfg.eval_seed + 1),
                                         (num_chunks * chunk, cfg.num_latents)))
    return _EvalSet(factors, factors_p, mask_p, eps_p, chunk, num_chunks)


def make_evaluator(cfg: TrainConfig, graphdef: nnx.GraphDef, dataset: FactorDataset,
                   mesh: Mesh) -> Callable[..., EvalResult]:
    """``evaluate(params_S, k, n=eval_size) -> EvalResult`` over the fixed evaluation set
    of ``n`` samples (the sets of each size are drawn once and kept)."""
    ndev = mesh.devices.size
    sets: dict[int, _EvalSet] = {}
    taus = jnp.asarray(cfg.thresholds, jnp.float32)
    x_sharding = batch_sharding(mesh)
    on_device = dataset.on_device
    model = HybridModel(cfg, dataset.observation_shape[-1], graphdef)

    def evaluate_chunk(params, k, run, xin, eps, mask):
        x = dataset.render(xin) if on_device else xin
        x = jax.lax.with_sharding_constraint(x, x_sharding)
        out = model.apply(params, x, eps, model.layer_k(k, run))
        terms = loss_terms(out, x, reduce=False)
        sums = {name: jnp.sum(terms[name] * mask) for name in EVAL_TERMS}
        if out.h is None:
            counts = jnp.zeros((len(cfg.thresholds), 0), jnp.int32)
            h = None
        else:  # the SAE target's spread, for its fraction of variance unexplained
            sums["target_sq"] = jnp.sum(jnp.sum(jnp.square(out.sae_target), -1) * mask)
            sums["target_sum"] = jnp.sum(out.sae_target * mask[:, None], 0)
            h = out.h
            above = (h[None] > taus[:, None, None]) & (mask[None, :, None] > 0)
            counts = jnp.sum(above, axis=1, dtype=jnp.int32)
        return out.mu, h, sums, counts

    rep = replicated(mesh)
    chunk_S = over_runs(evaluate_chunk, cfg, (0, None, None, None, None))
    fn = jax.jit(chunk_S, in_shardings=(rep, rep, x_sharding, x_sharding, x_sharding),
                 out_shardings=rep)

    def all_chunks(params, k, factors_CxB, eps_CxB, mask_CxB):
        """Every chunk in one program (a scan: sums and counts carried, codes stacked)."""
        out = jax.eval_shape(chunk_S, params, k, factors_CxB[0], eps_CxB[0], mask_CxB[0])
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), (out[2], out[3]))

        def add_chunk(acc, chunk):
            mu, h, sums, counts = chunk_S(params, k, *chunk)
            return jax.tree.map(jnp.add, acc, (sums, counts)), (mu, h)

        (sums, counts), (mu_C, h_C) = jax.lax.scan(add_chunk, zeros,
                                                   (factors_CxB, eps_CxB, mask_CxB))
        return mu_C, h_C, sums, counts

    chunked = batch_sharding(mesh, seed_axis=True)  # [C, chunk, ...], chunks sharded
    fn_all = jax.jit(all_chunks, in_shardings=(rep, rep, chunked, chunked, chunked),
                     out_shardings=rep)
    placed: dict[int, tuple] = {}  # n -> the evaluation set on the device, [C, chunk, ...]

    def run_on_device(params_S, k_arr, n: int, es: _EvalSet):
        if n not in placed:
            placed[n] = tuple(global_array(a.reshape(es.num_chunks, es.chunk, *a.shape[1:]),
                                           chunked)
                              for a in (es.factors_p, es.eps_p, es.mask_p))
        mu_C, h_C, sums, counts = jax.device_get(fn_all(params_S, k_arr, *placed[n]))
        # [C, S, chunk, ...] -> [S, C chunk, ...]
        mu = np.concatenate(list(mu_C), axis=1)[:, :n]
        h = None if h_C is None else np.concatenate(list(h_C), axis=1)[:, :n]
        return mu, h, sums, counts

    def run_chunks(params_S, k_arr, n: int, es: _EvalSet):
        mus, hs, counts, sums = [], [], 0, None
        for c in range(es.num_chunks):  # host-read images: one chunk at a time
            sl = slice(c * es.chunk, (c + 1) * es.chunk)
            xin = np.asarray(dataset.render(es.factors_p[sl]), np.float32)
            mu, h, s, cnt = fn(params_S, k_arr, *(global_array(a, x_sharding)
                                                  for a in (xin, es.eps_p[sl], es.mask_p[sl])))
            mus.append(mu)
            hs.append(h)
            counts = counts + cnt
            sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
        mu = np.concatenate(jax.device_get(mus), axis=1)[:, :n]
        h = None if hs[0] is None else np.concatenate(jax.device_get(hs), axis=1)[:, :n]
        return mu, h, jax.device_get(sums), jax.device_get(counts)

    def evaluate(params_S: nnx.State, k: int, n: int | None = None) -> EvalResult:
        n = cfg.eval_size if n is None else n
        if n not in sets:
            sets[n] = _eval_set(dataset, cfg, n, ndev)
        es = sets[n]
        k_arr = jnp.asarray(k, jnp.int32)
        mu, h, host, counts = (run_on_device if on_device else run_chunks)(params_S, k_arr,
                                                                             n, es)
        terms = {name: np.asarray(host[name]) / n for name in EVAL_TERMS}
        if "target_sq" in host:  # FVU = E||t - t_hat||^2 / (E||t||^2 - ||E t||^2)
            var_S = host["target_sq"] / n - np.sum(np.square(host["target_sum"] / n), -1)
            terms["sae_fvu"] = terms["sae"] / np.maximum(var_S, 1e-12)
        return EvalResult(es.factors, mu, h, np.asarray(counts), cfg.thresholds, terms, int(k),
                          tuple(dataset.factor_names))

    return evaluate


SHUFFLE_SEED = 0


def shuffled_factors(factors_nxF: np.ndarray, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """``[n, F]``: each factor column permuted on its own (fixed seed), so the marginals are
    kept and any dependence on the samples' codes is destroyed."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(col) for col in np.asarray(factors_nxF).T], axis=1)


def default_metrics(ev: RunEval) -> dict:
    """The metrics every epoch record gets from :mod:`sparsejax.metrics`.

    - ``mig_mean``: dlib's discrete MIG on the latent mean; ``mig_mean_shuffled``: the same
      with each factor's column permuted independently (:func:`shuffled_factors`), the
      estimator's floor at this sample size (no code carries information about them).
    - sparse models only: ``mig_code`` (MIG on the sparse code), ``firing`` (per threshold:
      dead and rare fractions, dense fractions, mean L0, log10 firing-density histogram;
      :func:`sparsejax.metrics.firing_stats`) and ``alignment`` (alive units, units specific
      to one factor, per-factor counts; :func:`sparsejax.metrics.alignment_from_mi`, from
      the same MI matrix as ``mig_code``).
    """
    from sparsejax.metrics import alignment_from_mi, firing_stats, mig, mig_details

    out = {"mig_mean": float(mig(ev.mu, ev.factors)),
           "mig_mean_shuffled": float(mig(ev.mu, shuffled_factors(ev.factors)))}
    if ev.h is not None:
        d = mig_details(ev.h, ev.factors)
        out["mig_code"] = d.score
        out["firing"] = firing_stats(ev.counts, ev.n, ev.thresholds).summary()
        alive = ev.counts[list(ev.thresholds).index(0.0)] > 0 if 0.0 in ev.thresholds \
            else np.asarray(ev.h > 0).any(axis=0)
        out["alignment"] = alignment_from_mi(d.mi_KxF, d.entropy_F, alive).summary(
            ev.factor_names or None)
    return out
