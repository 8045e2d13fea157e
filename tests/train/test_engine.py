"""The engine on a model small enough to check by hand: the protocol's gradient step against
a numpy Adam, the epoch driver's checkpoints, log points, interrupt and divergence, and the
resume check."""

import os
import signal
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.engine import (DelayedMetrics, Trainer, check_resumable, gradient_step,
                                    raise_if_diverged, run_epochs)
from sparsejax.train.errors import ConfigError, TrainingDiverged
from sparsejax.train.logs import Progress
from sparsejax.train.optim import make_optimizer


class Quadratic:
    """loss = 0.5 ||A w - y||^2 / B; rows of w held at unit norm after the step."""

    def init(self, key):
        return {"w": jax.random.normal(key, (3, 2))}

    def loss(self, params, batch, hyper):
        a, y = batch
        r = a @ params["w"] - y
        return hyper * 0.5 * jnp.sum(r**2) / a.shape[0], jnp.sum(r)

    def constrain_params(self, params):
        w = params["w"]
        return {"w": w / jnp.linalg.norm(w, axis=1, keepdims=True)}


def test_gradient_step_is_adam_on_the_loss_then_the_constraint(rng):
    model = Quadratic()
    params = model.init(jax.random.key(0))
    a, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    tx = make_optimizer(0.1)
    new, _, loss, aux = gradient_step(model, tx, params, tx.init(params),
                                      (jnp.asarray(a), jnp.asarray(y)), 2.0)
    w = np.asarray(params["w"], np.float64)
    g = 2.0 * a.T @ (a @ w - y) / 5
    m, v = 0.1 * g, 0.001 * g**2  # Adam's first step: bias-corrected m / sqrt(v) = sign(g)
    w1 = w - 0.1 * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)
    w1 /= np.linalg.norm(w1, axis=1, keepdims=True)
    np.testing.assert_allclose(new["w"], w1, rtol=1e-4, atol=1e-5)  # float32 vs float64
    assert float(loss) == pytest.approx(np.sum((a @ w - y) ** 2) / 5, rel=1e-5)
    assert float(aux) == pytest.approx(np.sum(a @ w - y), rel=1e-4, abs=1e-5)


class Count(NamedTuple):
    n: jax.Array
    bad_step: jax.Array


class Counter(Trainer):
    """A state that counts steps; ``bad_at`` makes one step's loss NaN."""

    def __init__(self, epochs=2, steps=5, log_every=2, bad_at=None, stop_at=None):
        self.epochs, self.steps_per_epoch, self.log_every = epochs, steps, log_every
        self.run_names, self.config, self.step_count = ["seed 0"], {"lr": 1.0}, 0
        self.bad_at, self.stop_at, self.logged, self.ended = bad_at, stop_at, [], []

    def step(self, state, epoch, step_in_epoch):
        if self.step_count == self.stop_at:
            os.kill(os.getpid(), signal.SIGINT)  # handled: the step finishes, then a save
        bad = jnp.where(state.bad_step >= 0, state.bad_step,
                        jnp.int32(self.step_count if self.step_count == self.bad_at else -1))
        self.step_count += 1
        state = Count(state.n + 1, bad)
        return state, {"loss": state.n.astype(jnp.float32), "bad_step": bad}

    def log(self, done, epoch, metrics):
        self.logged.append((done, int(metrics["loss"])))
        return f"epoch {epoch}"

    def end_epoch(self, state, epoch, timing):
        self.ended.append((epoch, timing.steps))
        return state, [epoch]


def _start():
    return Count(jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))


def _quiet(trainer, done=0):
    return Progress(trainer.epochs * trainer.steps_per_epoch, done, 1, enabled=False)


def test_driver_logs_every_k_steps_and_checkpoints_every_epoch(tmp_path):
    t, seen = Counter(), []
    with Checkpointer(tmp_path) as ck:
        state, status = run_epochs(t, _start(), ck, _quiet(t), on_epoch=seen.append)
        assert status == "done" and int(state.n) == 10 and ck.all_steps() == [5, 10]
        assert ck.metadata(5) | {"checksum": None} == {
            "epoch": 1, "step_in_epoch": 0, "config": {"lr": 1.0}, "checksum": None}
    # log points: every 2nd step and each epoch's last, reported one point late but all
    assert t.logged == [(2, 2), (4, 4), (5, 5), (7, 7), (9, 9), (10, 10)]
    assert t.ended == [(0, 5), (1, 5)] and seen == [[0], [1]]


def test_driver_interrupt_saves_mid_epoch_and_resumes_to_the_same_end(tmp_path):
    t = Counter(stop_at=6)
    with Checkpointer(tmp_path) as ck:
        state, status = run_epochs(t, _start(), ck, _quiet(t))
        assert status == "interrupted" and int(state.n) == 7
        assert ck.metadata()["epoch"] == 1 and ck.metadata()["step_in_epoch"] == 2
        state, meta = ck.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                              _start()))
    t2 = Counter()
    t2.step_count = 7
    with Checkpointer(tmp_path) as ck:
        state, status = run_epochs(t2, state, ck, _quiet(t2, 7), epoch=meta["epoch"],
                                   step_in_epoch=meta["step_in_epoch"])
    assert status == "done" and int(state.n) == 10


def test_driver_stops_at_the_first_bad_step_and_saves_nothing_after(tmp_path):
    t = Counter(bad_at=6)
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(TrainingDiverged, match=r"step 6 \(seed 0\).*last good checkpoint "
                                                   r"\(step 5\)"):
            run_epochs(t, _start(), ck, _quiet(t))
        assert ck.all_steps() == [5]


def test_raise_if_diverged_names_the_run_and_says_when_nothing_was_saved():
    raise_if_diverged(np.array([-1, -1]), ["a", "b"], None)
    with pytest.raises(TrainingDiverged, match=r"step 4 \(b\).*no checkpoint had been written"):
        raise_if_diverged(np.array([-1, 4]), ["a", "b"], None)


def test_delayed_metrics_report_one_point_late_and_flush():
    got = []
    d = DelayedMetrics(lambda done, m: got.append((done, int(m["x"]))))
    d.push(1, {"x": jnp.int32(10)})
    assert got == []
    d.push(2, {"x": jnp.int32(20)})
    assert got == [(1, 10)]
    d.flush()
    d.flush()
    assert got == [(1, 10), (2, 20)]


def test_resume_check_names_each_difference_and_what_may_change():
    check_resumable({"a": 1, "epochs": 2}, {"a": 1, "epochs": 5}, free=("epochs",))
    with pytest.raises(ConfigError, match=r"in a: saved 1 vs now 2, b: saved None vs now 3; "
                                          r"only epochs may change on resume"):
        check_resumable({"a": 1}, {"a": 2, "b": 3}, free=("epochs",))
