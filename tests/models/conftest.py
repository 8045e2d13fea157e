"""Model set-up shared by the model tests."""

import jax
import numpy as np
import pytest
from flax import nnx


@pytest.fixture
def numpy_init(rng):
    """``numpy_init(make)``: the module ``make()`` builds, its parameters drawn with numpy
    from the test's rng in the library's distributions (TF's glorot-uniform kernels, zero
    biases). ``make`` runs abstractly (``nnx.eval_shape``): the library's own random init
    compiles one XLA program per parameter shape, eager or jitted (seconds per model on
    XLA:CPU), and the tests here check the model's function, not its initialiser.
    (``jax.device_put``: ``jnp.asarray`` of a numpy array compiles a program per shape.)"""

    def draw(path, v):
        name = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)][-1]
        if name == "kernel":  # glorot uniform: fans over the receptive field
            receptive = int(np.prod(v.shape[:-2], dtype=np.int64))
            lim = np.sqrt(6.0 / (receptive * (v.shape[-2] + v.shape[-1])))
            return jax.device_put(rng.uniform(-lim, lim, v.shape).astype(v.dtype))
        if name == "bias":
            return jax.device_put(np.zeros(v.shape, v.dtype))
        raise ValueError(f"numpy_init: no rule for parameter {jax.tree_util.keystr(path)}")

    def build(make, params_of=None):
        """``params_of``: a module of the same layers (another impl) whose params to share."""
        graphdef, state = nnx.split(nnx.eval_shape(make))
        if params_of is not None:
            return nnx.merge(graphdef, nnx.state(params_of))
        return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))

    return build

