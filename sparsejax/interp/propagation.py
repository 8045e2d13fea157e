"""Rule-based backward passes by re-evaluating a function's jaxpr with substituted primitives.

A model function ``f: x -> out`` made of dense layers, convolutions, ReLUs, sums and shape
operations is traced once (``jax.make_jaxpr``) and evaluated primitive by primitive. Values
that depend on ``x`` are *active*; everything else (weights, biases, literals) is constant.
A :class:`Rule` may replace an active primitive with a ``jax.custom_vjp`` function whose
forward is the primitive and whose backward is the method's rule; ``jax.grad`` of the
re-evaluated function is then the modified backward pass. Call-like sub-jaxprs (``jit``,
``custom_jvp_call`` such as ``jax.nn.relu``, ``custom_vjp_call``, ``checkpoint``) are
entered, so ``jax.nn.relu`` is seen as ``max(x, 0)``. No model rewrite is needed.

Rules (``x`` a ReLU's input, ``g`` the cotangent arriving at its output):

- ``guided``: guided backprop (Springenberg 2015), ``g * [x > 0] * [g > 0]``.
- ``deconvnet``: deconvolution (Zeiler & Fergus 2014), ``max(g, 0)``.
- ``rescale``: DeepLIFT's rescale rule (Shrikumar 2017): every elementwise nonlinearity
  passes ``g * (y - y_ref) / (x - x_ref)`` (its derivative where ``x == x_ref``), with the
  reference activations evaluated alongside.
- LRP (Bach 2015; Montavon 2019), as a gradient: with relevance ``R = v * g`` at every value
  ``v``, the plain backward pass of linear primitives splits relevance in proportion to
  contributions (LRP-0). ``"epsilon"`` stabilises every ReLU input and the output:
  ``g -> g * z / (z + eps sign z)``. ``"zplus"`` and ``"gamma"`` replace the backward of
  every dense/conv primitive ``z = W x`` by ``W_rho^T (g z / (W_rho x))`` with
  ``rho(W) = W^+`` (z+) or ``W + gamma W^+`` (gamma); their bias adds pass relevance on
  whole (biases take none). Relevance of the input is ``x * grad``.

Letters: B batch, N any trailing size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

LRP_RULES = ("epsilon", "zplus", "gamma")
RELU_RULES = ("guided", "deconvnet")
RULES = (*RELU_RULES, "rescale", *LRP_RULES)

# Primitives whose sub-jaxpr is evaluated in place (they only call it).
CALL_PRIMITIVES = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
                             "custom_vjp_call", "custom_vjp_call_jaxpr", "checkpoint",
                             "remat", "remat2"})
LINEAR_LAYERS = frozenset({"dot_general", "conv_general_dilated"})
BIAS_ADDS = frozenset({"add", "sub", "add_any"})
# Elementwise unary nonlinearities the rescale rule applies to (besides max(x, 0)).
ELEMENTWISE_NONLINEAR = frozenset({"tanh", "logistic", "exp", "log", "log1p", "expm1",
                                   "integer_pow", "sqrt", "rsqrt", "abs", "sin", "cos",
                                   "erf", "square"})


# --------------------------------------------------------------------------- evaluation
def _const_value(v) -> np.ndarray | None:
    """The value of a constant if it is concrete (a literal or numpy), else None."""
    try:
        return np.asarray(v)
    except Exception:  # a tracer
        return None


def is_relu(prim: jcore.Primitive, vals: Sequence[Any], active: Sequence[bool]) -> bool:
    """``max(x, 0)`` with x active and the other operand a concrete zero."""
    if prim.name != "max" or len(vals) != 2 or sum(active) != 1:
        return False
    c = _const_value(vals[1 - active.index(True)])
    return c is not None and bool(np.all(c == 0))


def _bind(prim, params, vals):
    out = prim.bind(*vals, **prim.get_bind_params(params))
    return list(out) if prim.multiple_results else [out]


def _call_jaxpr(eqn):
    if eqn.primitive.name not in CALL_PRIMITIVES:
        return None
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(name)
        if isinstance(j, jcore.ClosedJaxpr):
            return j.jaxpr, j.consts
        if isinstance(j, jcore.Jaxpr):
            return j, ()
    return None


class Rule:
    """Default: every primitive as it is (the plain gradient)."""

    tracks_reference = False

    def apply(self, prim, params, vals, refs, active):
        """Outputs (and reference outputs, or None) of an active primitive."""
        return _bind(prim, params, vals), None

    def output(self, out):
        """Applied to the function's (active, floating) outputs."""
        return out


def _eval(jaxpr, consts, args, refs, active, rule: Rule, overrides=None):
    env: dict = {}
    overrides = overrides or {}

    def read(a):
        if isinstance(a, jcore.Literal):
            return a.val, a.val, False
        return env[a]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = (c, c, False)
    for v, a, r, act in zip(jaxpr.invars, args, refs, active):
        env[v] = (a, r, act)
    for eqn in jaxpr.eqns:
        vals, rvals, acts = ([], [], [])
        for a in eqn.invars:
            v, r, act = read(a)
            vals.append(v), rvals.append(r), acts.append(act)
        sub = _call_jaxpr(eqn)
        if sub is not None:
            outs = _eval(sub[0], sub[1], vals, rvals, acts, rule)
        else:
            if any(acts):
                ys, ry = rule.apply(eqn.primitive, eqn.params, vals, rvals, acts)
            else:
                ys, ry = _bind(eqn.primitive, eqn.params, vals), None
            if ry is None:
                ry = (_bind(eqn.primitive, eqn.params, rvals) if rule.tracks_reference
                      else ys)
            outs = [(y, r, any(acts)) for y, r in zip(ys, ry)]
        for v, o in zip(eqn.outvars, outs):
            env[v] = (overrides[v], overrides[v], True) if v in overrides else o
    return [read(v) for v in jaxpr.outvars]


def evaluate(closed: jcore.ClosedJaxpr, x, rule: Rule | None = None, x_ref=None, *,
             overrides=None, x_active: bool = True) -> list:
    """The flat outputs of ``closed`` (one input ``x``) evaluated with ``rule``.

    ``overrides`` maps top-level variables to values that replace what the jaxpr computes
    for them (those values count as active): the output as a function of an intermediate.
    """
    ref = x if x_ref is None else x_ref
    outs = _eval(closed.jaxpr, closed.consts, [x], [ref], [x_active], rule or Rule(),
                 overrides)
    return [y for y, _, _ in outs]


def rewrite(f: Callable, rule: Rule, x_like) -> Callable:
    """``g(x, x_ref=None)``: ``f(x)`` evaluated with ``rule``'s substitutions.

    ``x_like`` gives the shape and dtype ``f`` is traced at; ``x_ref`` is the reference
    input of rules that track one (DeepLIFT). Outputs keep ``f``'s pytree structure.
    """
    closed = jax.make_jaxpr(f, return_shape=True)(
        jax.ShapeDtypeStruct(jnp.shape(x_like), jnp.result_type(x_like)))
    closed, out_shape = closed
    treedef = jax.tree.structure(out_shape)

    def g(x, x_ref=None):
        ref = x if x_ref is None else x_ref
        outs = _eval(closed.jaxpr, closed.consts, [x], [ref], [True], rule)
        ys = [rule.output(y) if act and jnp.issubdtype(jnp.result_type(y), jnp.inexact)
              else y for y, _, act in outs]
        return jax.tree.unflatten(treedef, ys)

    return g


# --------------------------------------------------------------------------- ReLU rules
@jax.custom_vjp
def guided_relu(x):
    return jnp.maximum(x, 0)


guided_relu.defvjp(lambda x: (jnp.maximum(x, 0), x),
                   lambda x, g: (g * (x > 0) * (g > 0),))


@jax.custom_vjp
def deconv_relu(x):
    return jnp.maximum(x, 0)


deconv_relu.defvjp(lambda x: (jnp.maximum(x, 0), None), lambda _, g: (jnp.maximum(g, 0),))


class ReluRule(Rule):
    """Guided backprop or deconvnet: the ReLUs' backward replaced, all else plain."""

    def __init__(self, kind: str):
        if kind not in RELU_RULES:
            raise ValueError(f"unknown ReLU rule {kind!r}; expected one of {RELU_RULES}")
        self.relu = guided_relu if kind == "guided" else deconv_relu

    def apply(self, prim, params, vals, refs, active):
        if is_relu(prim, vals, active):
            return [self.relu(vals[active.index(True)]).astype(
                jnp.result_type(*vals))], None
        return _bind(prim, params, vals), None


# --------------------------------------------------------------------------- DeepLIFT
def _rescale(fn: Callable, x, x_ref, tol: float):
    """``fn(x)`` whose backward is the rescale multiplier ``dy / dx`` (Shrikumar 2017)."""

    @jax.custom_vjp
    def op(x, x_ref):
        return fn(x)

    def fwd(x, x_ref):
        return fn(x), (x, x_ref)

    def bwd(res, g):
        x, xr = res
        dx = x - xr
        deriv = jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]
        safe = jnp.where(jnp.abs(dx) > tol, dx, 1.0)
        m = jnp.where(jnp.abs(dx) > tol, (fn(x) - fn(xr)) / safe, deriv)
        return g * m, jnp.zeros_like(xr)

    op.defvjp(fwd, bwd)
    return op(x, x_ref)


class RescaleRule(Rule):
    """DeepLIFT rescale: reference activations tracked; nonlinearities get multipliers."""

    tracks_reference = True

    def __init__(self, tol: float = 1e-6):
        self.tol = tol

    def apply(self, prim, params, vals, refs, active):
        unary = sum(active) == 1 and (is_relu(prim, vals, active) or (
            prim.name in ELEMENTWISE_NONLINEAR and len(vals) == 1))
        if not unary:
            return _bind(prim, params, vals), None
        i = active.index(True)

        def fn(v):
            args = list(vals)
            args[i] = v
            return prim.bind(*args, **params)

        y = _rescale(fn, vals[i], jax.lax.stop_gradient(refs[i]), self.tol)
        return [y], [jax.lax.stop_gradient(fn(refs[i]))]


# --------------------------------------------------------------------------- LRP
def _stabilise(z, eps):
    return z + eps * jnp.where(z >= 0, 1.0, -1.0).astype(z.dtype)


def _epsilon_identity(z, eps: float):
    """Identity whose backward scales the cotangent by ``z / (z + eps sign z)``."""

    @jax.custom_vjp
    def op(z):
        return z

    op.defvjp(lambda z: (z, z), lambda z, g: (g * z / _stabilise(z, eps),))
    return op(z)


def _rho_layer(prim, params, vals, i: int, rho: Callable, eps: float):
    """A dense/conv primitive ``z = W x`` (x the active operand ``i``) whose backward is
    ``W_rho^T (g z / (W_rho x + eps))``."""
    j = 1 - i

    def lin(x, w):
        args = [None, None]
        args[i], args[j] = x, w
        return prim.bind(*args, **params)

    @jax.custom_vjp
    def op(x, w):
        return lin(x, w)

    def fwd(x, w):
        z = lin(x, w)
        return z, (x, w, z)

    def bwd(res, g):
        x, w, z = res
        zr, pull = jax.vjp(lambda v: lin(v, rho(w)), x)
        return pull(g * z / _stabilise(zr, eps))[0], jnp.zeros_like(w)

    op.defvjp(fwd, bwd)
    return op(vals[i], vals[j])


def _bias_pass(prim, params, vals, i: int):
    """``z = y + b`` (y active) whose backward hands all of ``R_z`` to y: ``g z / y``."""
    j = 1 - i

    @jax.custom_vjp
    def op(y, b):
        args = [None, None]
        args[i], args[j] = y, b
        return prim.bind(*args, **params)

    def fwd(y, b):
        args = [None, None]
        args[i], args[j] = y, b
        z = prim.bind(*args, **params)
        return z, (y, z, b)

    def bwd(res, g):
        y, z, b = res
        ok = y != 0
        return g * jnp.where(ok, z / jnp.where(ok, y, 1.0), 0.0), jnp.zeros_like(b)

    op.defvjp(fwd, bwd)
    return op(vals[i], vals[j])


class LRPRule(Rule):
    """Layer-wise relevance propagation (see the module docstring); the input relevance is
    ``x * grad`` of the rewritten function."""

    def __init__(self, rule: str = "epsilon", *, epsilon: float = 1e-6, gamma: float = 0.25):
        if rule not in LRP_RULES:
            raise ValueError(f"unknown LRP rule {rule!r}; expected one of {LRP_RULES}")
        if epsilon < 0 or gamma < 0:
            raise ValueError(f"LRP needs epsilon >= 0 and gamma >= 0, got {epsilon}, {gamma}")
        self.rule, self.epsilon, self.gamma = rule, epsilon, gamma

    def _rho(self, w):
        wp = jnp.maximum(w, 0)
        return wp if self.rule == "zplus" else w + self.gamma * wp

    def apply(self, prim, params, vals, refs, active):
        if is_relu(prim, vals, active):
            x = vals[active.index(True)]
            if self.rule == "epsilon":
                x = _epsilon_identity(x, self.epsilon)
            return [jnp.maximum(x, jnp.zeros((), x.dtype))], None
        two = len(vals) == 2 and sum(active) == 1
        if self.rule != "epsilon" and two and prim.name in LINEAR_LAYERS:
            return [_rho_layer(prim, params, vals, active.index(True), self._rho,
                               max(self.epsilon, 1e-9))], None
        if self.rule != "epsilon" and two and prim.name in BIAS_ADDS:
            return [_bias_pass(prim, params, vals, active.index(True))], None
        return _bind(prim, params, vals), None

    def output(self, out):
        return _epsilon_identity(out, self.epsilon) if self.rule == "epsilon" else out


def make_rule(name: str, **kw) -> Rule:
    """The rule called ``name`` (one of :data:`RULES`)."""
    if name in RELU_RULES:
        return ReluRule(name)
    if name == "rescale":
        return RescaleRule(**kw)
    if name in LRP_RULES:
        return LRPRule(name, **kw)
    raise ValueError(f"unknown propagation rule {name!r}; expected one of {RULES}")
