"""SAE training throughput at SAE-library scale: d_in 768, N 16,384, k 32, batch 4,096.

One row per configuration: vectors per second of the full jitted train step (forward,
backward through the sparse encoder and decoder, Adam, decoder renormalisation,
dead-latent bookkeeping), beside its floors measured in the same run:

* ``encoder_floor_vectors_per_s``: the dense encoder matmul alone (``x @ W_enc``, 2 B d N
  FLOPs), timed at this shape in the same run: no Top-k SAE can avoid it;
* ``bandwidth_floor_vectors_per_s``: the bytes a step must move (read the batch; read
  W_enc, W_dec; read and write both, and Adam's two moments for each, once) over the
  measured copy bandwidth;
* the peer: SAELens's TopK SAE (torch, dense decoder) at ~745 vectors/s on the 2-core CPU
  this project targets (issue 5); quoted, not measured here.

AuxK costs a second top-k and k_aux more sparse rows only while some latent is dead: the
``auxk_active`` row forces every latent dead to price that path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.bench.timing import copy_bandwidth_bytes_per_s, seconds_per_call
from sparsejax import ops
from sparsejax.models import sae as sae_model
from sparsejax.train import sae as sae_train
from sparsejax.train.mesh import DATA_AXIS, make_mesh

D_IN, N, K, BATCH = 768, 16384, 32, 4096
SAELENS_CPU_VECTORS_PER_S = 745.0


def _step_rate(cfg, tcfg, mesh, dead_all: bool) -> float:
    state = sae_train.init_state(jax.random.key(0), cfg, tcfg)
    if dead_all:  # last fired long ago: every latent is dead, AuxK runs
        state = state._replace(step=jnp.int32(10 * tcfg.dead_after))
    replicated = jax.NamedSharding(mesh, jax.P())
    state = jax.device_put(state, replicated)
    x = jax.device_put(jax.random.normal(jax.random.key(1), (BATCH, D_IN), jnp.float32),
                       jax.NamedSharding(mesh, jax.P(DATA_AXIS, None)))
    k = jax.device_put(jnp.int32(K), replicated)
    step = sae_train.make_train_step(cfg, tcfg, mesh)
    box = [state]

    def run():
        box[0], metrics = step(box[0], x, k)
        return metrics

    return BATCH / seconds_per_call(run, min_time=2.0, warmup=2, max_calls=20)


def bench_sae_train():
    mesh = make_mesh()
    tcfg = sae_train.SAETrainConfig(batch_size=BATCH)
    bw = copy_bandwidth_bytes_per_s()
    x = jax.random.normal(jax.random.key(1), (BATCH, D_IN), jnp.float32)
    W = jax.random.normal(jax.random.key(2), (D_IN, N), jnp.float32)
    enc_s = seconds_per_call(jax.jit(jnp.matmul), x, W, min_time=1.0)
    enc_floor = BATCH / enc_s
    flops = 2 * BATCH * D_IN * N / enc_s
    param_bytes = 4 * (2 * D_IN * N + N + D_IN)
    step_bytes = 4 * BATCH * D_IN + 2 * param_bytes + 4 * param_bytes  # params r/w, mu, nu r/w
    bw_floor = BATCH * bw / step_bytes
    # Off CPU both top-k paths are timed (auto picks one); on CPU pallas would interpret.
    impls = ("auto",) if jax.default_backend() == "cpu" else ("lax", "pallas")
    for impl in impls:
        for k_aux, dead_all in ((0, False), (D_IN // 2, True)):
            cfg = sae_model.SAEConfig(d_in=D_IN, n_latents=N, k=K, k_aux=k_aux, impl=impl)
            rate = _step_rate(cfg, tcfg, mesh, dead_all)
            yield {"d_in": D_IN, "n": N, "k": K, "batch": BATCH, "k_aux": k_aux,
                   "auxk_active": dead_all,
                   "impl": ops.resolve_impl(impl, n=N, op="values_indices"),
                   "auto": (ops.resolve_impl(impl, n=N, op="values_indices")
                            == ops.resolve_impl("auto", n=N, op="values_indices")),
                   "devices": jax.device_count(), "vectors_per_s": round(rate, 1),
                   "encoder_floor_vectors_per_s": round(enc_floor, 1),
                   "x_encoder_floor": round(enc_floor / rate, 2),
                   "bandwidth_floor_vectors_per_s": round(bw_floor, 1),
                   "matmul_gflop_per_s": round(flops / 1e9, 1),
                   "peer": "SAELens TopK (torch, 2-core CPU, quoted)",
                   "peer_vectors_per_s": SAELENS_CPU_VECTORS_PER_S,
                   "speedup_vs_peer": round(rate / SAELENS_CPU_VECTORS_PER_S, 2)}


CASES = {"sae_train": bench_sae_train}
