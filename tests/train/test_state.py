"""The compiled initialiser: the same states as eager ``init_one``, one program per model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.train import state as St


def _eager(cfg, channels):
    """The reference: ``init_one`` of each run, op by op, stacked on the host."""
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        runs = [St.init_one(cfg, channels, jnp.uint32(s)) for _, s in cfg.runs]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *runs)


def test_compiled_init_equals_eager_init_one_and_is_shared_by_equal_models(tiny):
    seed = int(np.random.default_rng().integers(0, 2**31))
    cfg = tiny(num_seeds=2, seed=seed)
    got = St.init_state(cfg, 1)
    chex.assert_trees_all_equal(got, _eager(cfg, 1))
    # the runs differ: their own keys and parameters
    kernel = got.params["encoder"]["fc"]["kernel"][...]
    assert not np.allclose(kernel[0], kernel[1])
    # a config that differs only in what init_one does not read shares the program
    other = tiny(num_seeds=1, seed=seed + 1, epochs=5, batch_size=16, beta=4.0,
                 schedule={"start": 30, "end": 10, "length": 3}, remedy={"k_aux": 4},
                 eval_size=128)
    assert St.init_key(other) == St.init_key(cfg)
    assert St._init_program(other, 1, "cpu") is St._init_program(cfg, 1, "cpu")
    chex.assert_trees_all_equal(St.init_state(other, 1), _eager(other, 1))
    # what the model or the optimiser is built from is in the key
    for changed in (tiny(method="l1"), tiny(num_units=16, schedule={"start": 16, "end": 8}),
                    tiny(learning_rate=1e-3), tiny(controller={"init_coef": 0.5}),
                    tiny(sparse_input="whiten")):
        assert St.init_key(changed) != St.init_key(cfg)


def test_compiled_init_of_the_dense_vae_on_three_channels(tiny):
    cfg = tiny(method="dense", seed=int(np.random.default_rng().integers(0, 2**31)))
    got = St.init_state(cfg, 3)
    chex.assert_trees_all_equal(got, _eager(cfg, 3))
    assert got.fire.shape == (1, 1)  # the dense VAE's one always-zero slot
