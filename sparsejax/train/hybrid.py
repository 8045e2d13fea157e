"""The VAE-SAE hybrid as an engine :class:`~sparsejax.train.engine.Model`, with the
remedies of its sparse layer (:mod:`sparsejax.sparsity.remedies`) wired in.

The model is split once: its graph definition is static (built from the config, no
parameters allocated) and the parameters are the ``nnx.State`` of its ``nnx.Param``
variables, a pytree the engine differentiates and updates.
"""

from __future__ import annotations

# Shape letters: B batch, N sparse units, D the sparse layer's input width, M samples.

import jax
import jax.numpy as jnp
from flax import nnx

from sparsejax.models.vae import VAE, loss_terms, total_loss
from sparsejax.sparsity import remedies
from sparsejax.train.config import TrainConfig
from sparsejax.train.seeds import RunSpec, per_run, run_k


def model_options(cfg: TrainConfig) -> tuple[tuple[str, object], ...]:
    """The :class:`~sparsejax.models.vae.VAE` arguments ``cfg`` sets, as sorted (name,
    value) pairs (hashable: they key the compiled initialiser, ``state.init_state``)."""
    r = cfg.remedy
    options = {"batchtopk": (("batchtopk_decay", r.batchtopk_decay),),
               "jumprelu": (("jump_bandwidth", r.jump_bandwidth), ("jump_init", r.jump_init),
                            ("jump_lr_scale", r.jump_lr_scale))}.get(cfg.method)
    return tuple(sorted({
        "method": cfg.method, "num_units": cfg.num_units, "num_latents": cfg.num_latents,
        "placement": cfg.placement, "topk_impl": cfg.topk_impl, "topk_relu": cfg.topk_relu,
        "conv_impl": cfg.conv_impl, "compute_dtype": cfg.compute_dtype,
        "whiten": cfg.sparse_input == "whiten", "sparsifier_options": options}.items()))


def make_model(cfg: TrainConfig, channels: int, rngs: nnx.Rngs) -> VAE:
    kwargs = dict(model_options(cfg))
    options = kwargs.pop("sparsifier_options")
    return VAE(channels, sparsifier_options=None if options is None else dict(options),
               rngs=rngs, **kwargs)


def model_graphdef(cfg: TrainConfig, channels: int) -> nnx.GraphDef:
    """The model's static graph definition (no parameters are allocated)."""
    abstract = nnx.eval_shape(lambda: make_model(cfg, channels, nnx.Rngs(0)))
    return nnx.split(abstract)[0]


class HybridModel:
    """``init(key) -> params``; ``loss(params, (x, eps[, dead]), (k, l1_coef)) -> (loss,
    (terms, h))``.

    ``x`` float32 ``[B, H, W, C]`` images in [0, 1], ``eps`` ``[B, L]`` the reparameterisation
    noise, ``dead`` bool ``[N]`` the units the remedies count as dead (AuxK, the
    pre-activation loss; default none), ``k`` the traced number of active units,
    ``l1_coef`` the penalty's weight this step (0 outside the penalised arms); ``terms``
    are the batch means of the loss terms (:func:`sparsejax.models.vae.loss_terms`, with
    ``aux`` and ``preact`` added), ``h`` the sparse code ``[B, N]`` (None dense).
    """

    def __init__(self, cfg: TrainConfig, channels: int, graphdef: nnx.GraphDef | None = None):
        self.cfg, self.channels = cfg, channels
        self._graphdef = graphdef

    @property
    def graphdef(self) -> nnx.GraphDef:
        if self._graphdef is None:  # built on first use: init alone never needs it
            self._graphdef = model_graphdef(self.cfg, self.channels)
        return self._graphdef

    def init(self, key: jax.Array) -> nnx.State:
        model = make_model(self.cfg, self.channels, nnx.Rngs(params=key))
        return nnx.state(model, nnx.Param)

    def layer_k(self, k: jax.Array, run: RunSpec) -> jax.Array:
        """The k a run's sparse layer uses: its target (:func:`~sparsejax.train.seeds.run_k`;
        the L1 arm's ReLU ignores it), except in a group (``cfg.group``), where a penalised
        run's ReLU is Top-k at k = N."""
        target = run_k(k, run)
        return per_run(run.pen, jnp.int32(self.cfg.num_units), target) if self.cfg.group \
            else target

    def loss(self, params: nnx.State, batch, hyper: tuple[jax.Array, jax.Array]):
        x, eps, *rest = batch
        k, l1_coef = hyper
        model = nnx.merge(self.graphdef, params)
        out = model(x, eps, k)
        terms = loss_terms(out, x)
        loss = total_loss(terms, beta=self.cfg.beta, sae_weight=self.cfg.sae_weight,
                          l1_coef=l1_coef)
        r = self.cfg.remedy
        if out.h is not None and rest and (r.k_aux or r.preact_coef):
            dead_N = rest[0]
            if r.k_aux:
                terms["aux"] = self._auxk(model, out, dead_N)
                # Gao et al. weight the normalised AuxK loss against the normalised MSE: in
                # the SAE term's units, that is aux_coef x the target's (detached) variance
                var = jnp.mean(jnp.sum(jnp.square(
                    out.sae_target - jnp.mean(out.sae_target, 0)), -1))
                loss = loss + self.cfg.sae_weight * r.aux_coef * var * terms["aux"]
            if r.preact_coef:
                theta_N = model.sparse.sparsify.threshold()
                gap_BxN = jax.nn.relu(theta_N - out.pre) * jax.lax.stop_gradient(out.h_scale)
                terms["preact"] = jnp.mean(jnp.sum(gap_BxN * dead_N, -1))
                loss = loss + r.preact_coef * terms["preact"]
        return loss, (terms, out.h)

    def _auxk(self, model: VAE, out, dead_N: jax.Array) -> jax.Array:
        values_BxA, indices_BxA = remedies.dead_aux_code(out.pre, dead_N, self.cfg.remedy.k_aux)
        aux = remedies.auxk_loss(model.sparse.decoder_matrix(), out.sae_target, out.sae_recon,
                                 values_BxA, indices_BxA)
        return jnp.where(jnp.any(dead_N), aux, 0.0)  # no dead unit: no AuxK term

    def after_update(self, params: nnx.State, h_BxN: jax.Array | None) -> nnx.State:
        """Statistics the optimiser does not train, updated from this step's code (the
        BatchTopK threshold); other models' parameters come back unchanged."""
        if self.cfg.method != "batchtopk" or h_BxN is None:
            return params
        model = nnx.merge(self.graphdef, params)
        sp = model.sparse.sparsify
        sp.threshold[...] = sp.estimate(sp.threshold[...], jax.lax.stop_gradient(h_BxN))
        return nnx.state(model, nnx.Param)

    def apply(self, params: nnx.State, x, eps, k):
        """The forward pass in evaluation mode (:class:`sparsejax.models.vae.VAEOutputs`)."""
        model = nnx.merge(self.graphdef, params)
        model.eval()  # BatchTopK cuts at its estimated threshold
        return model(x, eps, k)

    # ------------------------------------------------------------------ the remedies
    def resample(self, key: jax.Array, params: nnx.State, opt_state, tx, dead_N: jax.Array,
                 x, eps, k):
        """Anthropic resampling of the dead units of the sparse layer from one batch
        (:func:`sparsejax.sparsity.remedies.resample_rows`): encoder column, encoder bias
        and decoder row are rewritten; the rows of the latent head that read a resampled
        unit are zeroed (it enters the code anew), and the optimiser state of every
        rewritten row is reset. Returns ``(params, opt_state)``."""
        model = nnx.merge(self.graphdef, params)
        out = model(x, eps, k)
        sp = model.sparse
        dec_norm = jnp.mean(jnp.linalg.norm(sp.dec.kernel[...], axis=1))
        new = remedies.resample_rows(
            key, remedies.Rows(sp.enc.kernel[...], sp.enc.bias[...], sp.dec.kernel[...]),
            sp.dec.bias[...], dead_N, out.sae_target, out.sae_recon, dec_norm=dec_norm)
        sp.enc.kernel[...], sp.enc.bias[...], sp.dec.kernel[...] = new
        d_N1 = dead_N[:, None]
        heads = (model.mean, model.logvar) if model.placement == "hidden" else ()
        for head in heads:
            head.kernel[...] = jnp.where(d_N1, 0.0, head.kernel[...])
        mask = jax.tree.map(lambda v: jnp.zeros(v.shape, bool), params)
        mask_model = nnx.merge(self.graphdef, mask)
        mask_model.sparse.enc.kernel[...] = jnp.broadcast_to(dead_N[None, :],
                                                             sp.enc.kernel.shape)
        mask_model.sparse.enc.bias[...] = dead_N
        mask_model.sparse.dec.kernel[...] = jnp.broadcast_to(d_N1, sp.dec.kernel.shape)
        for name in ("mean", "logvar") if heads else ():
            getattr(mask_model, name).kernel[...] = jnp.broadcast_to(
                d_N1, getattr(model, name).kernel.shape)
        opt_state = remedies.reset_moments(tx, opt_state, nnx.state(mask_model, nnx.Param))
        return nnx.state(model, nnx.Param), opt_state

    def prepare(self, key: jax.Array, params: nnx.State, x_MxHxWxC: jax.Array, k, *,
                whiten: bool | None = None) -> tuple[nnx.State, nnx.State]:
        """The data-dependent start of the sparse layer (``sparse_init``, ``sparse_input``)
        from the layer's inputs on the images ``x``. Returns ``(params, mask)``: ``mask``
        marks (bool leaves) the parameters that changed, whose optimiser state the caller
        resets. ``whiten`` (default: ``sparse_input == "whiten"``) estimates the whitening;
        False keeps the one in ``params``.

        - ``sparse_input="whiten"``: m, P, P^-1 from the inputs' moments, and the encoder
          and decoder re-expressed in the whitened coordinates, so the layer computes the
          same function as before: only the coordinates Adam works in change.
        - ``sparse_init="tied"``: the encoder becomes the decoder's transpose.
        - ``sparse_init="subspace"``: encoder columns are unit directions inside the active
          subspace of the (centred) inputs, the decoder rows the same directions at the
          decoder's mean row norm, ``b_enc = -m W_enc`` and ``b_dec = m``.
        """
        cfg = self.cfg
        model = nnx.merge(self.graphdef, params)
        sp = model.sparse
        f_MxD = model.encode(x_MxHxWxC, k).sae_target
        mom = remedies.moments(f_MxD)
        changed = set()
        if cfg.sparse_input == "whiten" if whiten is None else whiten:
            P_DxD, P_inv_DxD = remedies.whitening(mom)
            W_DxN, b_N = sp.enc.kernel[...], sp.enc.bias[...]
            V_NxD, c_D = sp.dec.kernel[...], sp.dec.bias[...]
            # pre = (f - m) P W' + b' = f W + b  and  (h V' + c') P^-1 + m = h V + c
            sp.enc.kernel[...] = P_inv_DxD @ W_DxN
            sp.enc.bias[...] = b_N + mom.mean @ W_DxN
            sp.dec.kernel[...] = V_NxD @ P_DxD
            sp.dec.bias[...] = (c_D - mom.mean) @ P_DxD
            sp.whiten.mean[...], sp.whiten.P[...], sp.whiten.P_inv[...] = (
                mom.mean, P_DxD, P_inv_DxD)
            changed |= {"enc", "dec", "whiten"}
        if cfg.sparse_init == "tied":
            sp.enc.kernel[...] = remedies.tied_encoder(sp.decoder_matrix())
            changed.add("enc")
        elif cfg.sparse_init == "subspace":
            u_NxD = remedies.subspace_directions(key, mom, cfg.num_units)
            dec_norm = jnp.mean(jnp.linalg.norm(sp.decoder_matrix(), axis=1))
            sp.enc.kernel[...] = u_NxD.T
            sp.enc.bias[...] = -mom.mean @ u_NxD.T
            sp.dec.kernel[...] = u_NxD * dec_norm
            sp.dec.bias[...] = mom.mean
            changed |= {"enc", "dec"}
        new = nnx.state(model, nnx.Param)
        mask = jax.tree.map(lambda v: jnp.zeros(v.shape, bool), new)
        mask_model = nnx.merge(self.graphdef, mask)
        for name in changed:
            part = getattr(mask_model.sparse, name)
            for _, var in nnx.iter_graph(part):
                if isinstance(var, nnx.Param):
                    var[...] = jnp.ones(var.shape, bool)
        return new, nnx.state(mask_model, nnx.Param)
