"""Transformer train step: 4 simulated devices compute what one does, seeds in one program
are independent, the evaluator measures every head."""

import dataclasses
import os
import signal

import jax
import numpy as np
import pytest

from sparsejax.data import sequences as sq
from sparsejax.models import transformer as tfm
from sparsejax.train import ConfigError, make_mesh
from sparsejax.train import transformer as ttf

CFG = tfm.TransformerConfig(vocab=8, max_len=8, layers=1, heads=2, width=8)
TASK = sq.TaskConfig("repeated_tokens", vocab=8, seq_len=8, min_repeat=2)
TCFG = ttf.HeadsTrainConfig(seeds=(3, 5), batch_size=8, lr=1e-2, steps_per_epoch=2,
                            scan_steps=1, eval_batch=4)


def test_four_devices_equal_one_and_seeds_are_independent():
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:4]):
        mesh = make_mesh(devices)
        step = ttf.programs(CFG, TASK, TCFG, mesh)[0]  # shared with the interrupt test
        state = jax.device_put(ttf.init_state(CFG, TCFG), jax.NamedSharding(mesh, jax.P()))
        for _ in range(2):
            state, metrics = step(state)
        results.append((state, metrics))
    (s1, m1), (s4, m4) = results
    np.testing.assert_array_equal(s1.step, [2, 2])
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s4)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-4)
    assert np.all(np.asarray(m1["bad_step"]) == -1)
    # the two seeds start and train apart
    w = np.asarray(s1.params["unembed"][...])
    assert not np.allclose(w[0], w[1])


def test_ctrl_c_then_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    tcfg = dataclasses.replace(TCFG, epochs=2)
    straight = ttf.train(CFG, TASK, tcfg, tmp_path / "a", progress=False)
    assert straight.status == "done" and [r["step"] for r in straight.records] == [2, 2, 4, 4]
    step = ttf.HeadsTrainer.step
    calls = []

    def interrupting(self, state, epoch, step_in_epoch):
        calls.append(1)
        if len(calls) == 3:  # mid-way through the second epoch
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, state, epoch, step_in_epoch)

    monkeypatch.setattr(ttf.HeadsTrainer, "step", interrupting)
    cut = ttf.train(CFG, TASK, tcfg, tmp_path / "b", progress=False)
    assert cut.status == "interrupted"
    monkeypatch.setattr(ttf.HeadsTrainer, "step", step)
    resumed = ttf.train(CFG, TASK, tcfg, tmp_path / "b", resume=True, progress=False)
    assert resumed.status == "done" and resumed.start_step == 3
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    assert resumed.records == straight.records


def test_train_config_errors():
    with pytest.raises(ConfigError, match="scan_steps=3 must divide steps_per_epoch=2"):
        dataclasses.replace(TCFG, scan_steps=3)
    with pytest.raises(ConfigError, match="seeds=.* must be distinct"):
        dataclasses.replace(TCFG, seeds=(1, 1))
    with pytest.raises(ConfigError, match="lr=0"):
        dataclasses.replace(TCFG, lr=0)
