"""The jaxpr re-evaluation: conv layers, nnx modules, jitted and custom-derivative
sub-functions, and the rules' defining properties."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparsejax.interp import attribution as A
from sparsejax.interp import propagation as P
from sparsejax.models.conv import Conv


class _ConvNet(nnx.Module):
    """The project's stride-2 conv (phase form: pad, space-to-depth, conv), ReLU, dense."""

    def __init__(self, rngs, bias=True):
        self.conv = Conv(2, 4, 4, impl="phase", rngs=rngs)
        self.fc = nnx.Linear(4 * 4 * 4, 3, use_bias=bias, rngs=rngs)
        if bias:
            self.conv.bias[...] = 0.1 * jax.random.normal(rngs.params(), (4,))
        else:
            self.conv.bias[...] = jnp.zeros((4,))

    def __call__(self, x):
        h = jax.jit(jax.nn.relu)(self.conv(x))  # a jit sub-jaxpr around a custom_jvp
        return self.fc(h.reshape(h.shape[0], -1))


@pytest.fixture(scope="module")
def nets():
    return _ConvNet(nnx.Rngs(0), bias=False), _ConvNet(nnx.Rngs(1), bias=True)


@pytest.fixture(scope="module")
def x():
    return jax.random.uniform(jax.random.key(2), (3, 8, 8, 2))


def test_plain_rule_is_the_function(nets, x):
    net = nets[1]
    g = P.rewrite(net, P.Rule(), x)

    @jax.jit  # both functions and both gradients in one program
    def outs_and_grads(x):
        return ((g(x), net(x)), (jax.grad(lambda v: g(v)[:, 1].sum())(x),
                                 jax.grad(lambda v: net(v)[:, 1].sum())(x)))

    (got, want), (got_grad, want_grad) = outs_and_grads(x)
    chex.assert_trees_all_close(got, want, atol=1e-6)
    chex.assert_trees_all_close(got_grad, want_grad, atol=1e-6)


def test_lrp_epsilon_on_bias_free_convnet_is_input_x_gradient(nets, x):
    net = nets[0]
    lrp, ixg = jax.jit(lambda x: (A.lrp(net, x, 2, epsilon=1e-9), A.input_x_gradient(net, x, 2)))(x)
    chex.assert_trees_all_close(lrp, ixg, atol=1e-5)


def test_zplus_conserves_relevance(nets, x):
    # inputs >= 0, z+ everywhere, biases take no relevance: sum R_in = the target score
    # wherever every neuron with a positive output has a positive z+ denominator
    net = nets[1]
    r, out = jax.jit(lambda x: (A.lrp(net, x, 0, rule="zplus"), net(x)))(x)
    np.testing.assert_allclose(np.asarray(r).sum((1, 2, 3)), np.asarray(out[:, 0]), rtol=1e-4)
    assert np.all(np.asarray(r) >= -1e-6) or np.any(np.asarray(out[:, 0]) < 0)


def test_deeplift_completeness_on_convnet(nets, x):
    net = nets[1]
    x0 = jnp.full_like(x, 0.5)
    dl, diff = jax.jit(lambda x, x0: (A.deeplift(net, x, 1, baseline=x0),
                                      net(x)[:, 1] - net(x0)[:, 1]))(x, x0)
    np.testing.assert_allclose(np.asarray(dl).sum((1, 2, 3)), np.asarray(diff), atol=1e-4)


def test_relu_detection_and_rules():
    zero = np.float32(0)
    assert P.is_relu(jax.lax.max_p, [jnp.ones(2), zero], [True, False])
    assert not P.is_relu(jax.lax.max_p, [jnp.ones(2), np.float32(1)], [True, False])
    assert not P.is_relu(jax.lax.max_p, [jnp.ones(2), jnp.ones(2)], [True, True])
    with pytest.raises(ValueError, match="unknown"):
        P.make_rule("nope")
    with pytest.raises(ValueError, match="unknown"):
        A.lrp(lambda v: v, jnp.ones((1, 2)), 0, rule="alpha-beta")
    # deconvnet passes positive cotangents through a ReLU whatever its input
    x = jnp.asarray([[-1.0, 2.0]])
    g = A.deconvnet(lambda v: jax.nn.relu(v).sum(1), x)
    chex.assert_trees_all_close(g, jnp.ones((1, 2)))
    g = A.guided_backprop(lambda v: -jax.nn.relu(v).sum(1), x)
    chex.assert_trees_all_close(g, jnp.zeros((1, 2)))
