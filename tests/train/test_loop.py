"""The loop: resume reproduces an uninterrupted run, SIGTERM saves and exits cleanly,
NaN stops with the step named and the last good checkpoint kept, logs are written."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.data import FactorDataset, get_dataset
from sparsejax.dir_lock import DirectoryLockedError
from sparsejax.train import (Checkpointer, ConfigError, RunExistsError, TrainingDiverged,
                             load_run, train)
from sparsejax.train import config as C
QUIET = dict(metrics_fn=None, progress_tty=False)


@pytest.fixture(scope="module")
def cfg(tiny):
    return tiny(epochs=2)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cfg):
    """Two epochs without interruption (TensorBoard on, default metrics hook)."""
    out = tmp_path_factory.mktemp("straight")
    return train(cfg, out, progress_tty=False)


def _params(result):
    return jax.tree.map(np.asarray, result.state.params)


def test_outputs_and_records(straight, cfg):
    out = straight.out_dir
    assert straight.status == "done"
    assert {p.name for p in out.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoints",
                                               "tb"}
    assert list((out / "tb" / "seed_0").glob("events.out.tfevents.*"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["epoch"] for r in recs] == [0, 1] and recs == straight.history
    r = recs[-1]
    assert r["k"] == cfg.schedule(1) == 8 and r["step"] == 2 * cfg.steps_per_epoch
    assert set(r["train"]) == {"loss", "recon", "kl", "sae", "l1", "l0"}
    assert set(r["dead_fraction"]) == {"0", "1e-06", "0.001", "0.01"}
    assert len(r["firing_counts"]["0"]) == cfg.num_units and r["eval_size"] == cfg.eval_size
    assert sum(r["train_firing_counts"]) == pytest.approx(
        r["train"]["l0"] * cfg.steps_per_epoch * cfg.batch_size, rel=1e-4)
    dead0 = np.mean(np.asarray(r["firing_counts"]["0"]) == 0)
    assert r["dead_fraction"]["0"] == pytest.approx(dead0)
    assert r["eval"]["l0"] <= 8 and "mig_mean" in r and "mig_code" in r
    assert Checkpointer(out / "checkpoints").all_steps() == [3, 6]


def test_resume_reproduces_the_uninterrupted_run(straight, cfg, tmp_path):
    first = train(cfg.replace(epochs=1), tmp_path, **QUIET)
    assert len(first.history) == 1
    resumed = train(cfg, tmp_path, resume=True, **QUIET)
    jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(straight))
    assert [r["epoch"] for r in resumed.history] == [0, 1]
    assert resumed.history[1]["eval"] == straight.history[1]["eval"]


def test_sigterm_mid_epoch_saves_and_resume_continues_exactly(straight, cfg, tmp_path):
    def stop_after_first_epoch(records):
        if records[0]["epoch"] == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: finish the step, save, return

    cut = train(cfg, tmp_path, on_epoch=stop_after_first_epoch, **QUIET)
    assert cut.status == "interrupted"
    meta = Checkpointer(tmp_path / "checkpoints").metadata()
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 1)  # saved inside epoch 1
    resumed = train(cfg, tmp_path, resume=True, **QUIET)
    assert resumed.status == "done"
    jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(straight))
    assert resumed.history[1]["train"] == straight.history[1]["train"]
    # the restored run's model is the final one
    run = load_run(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, _params(run), _params(straight))


def test_scanned_steps_train_the_same_run_and_resume_mid_epoch_exactly(straight, cfg,
                                                                       tmp_path):
    """scan_steps = 2 over 3 steps per epoch: a scan of 2, then the remainder alone. The run
    is the straight one to float32 rounding; cut after the first scan of epoch 1 and
    resumed (the same dispatches), it is the uninterrupted scanned run exactly."""
    scanned = cfg.replace(scan_steps=2)
    whole = train(scanned, tmp_path / "whole", **QUIET)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                         atol=1e-2 * cfg.learning_rate),
                 _params(whole), _params(straight))
    assert [r["step"] for r in whole.history] == [3, 6]

    def stop_after_first_epoch(records):
        if records[0]["epoch"] == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    cut = train(scanned, tmp_path / "cut", on_epoch=stop_after_first_epoch, **QUIET)
    meta = Checkpointer(tmp_path / "cut" / "checkpoints").metadata()
    assert cut.status == "interrupted" and (meta["epoch"], meta["step_in_epoch"]) == (1, 2)
    resumed = train(scanned, tmp_path / "cut", resume=True, **QUIET)
    jax.tree.map(np.testing.assert_array_equal, _params(resumed), _params(whole))
    assert resumed.history[1]["train"] == whole.history[1]["train"]


def test_init_from_continues_another_run_with_a_new_schedule(straight, cfg, tmp_path):
    """As the revival study does: start from a finished run's state, k held at its end."""
    held = cfg.replace(epochs=1, schedule={"start": 8, "end": 8, "length": 1})
    cont = train(held, tmp_path, init_from=straight.out_dir, **QUIET)
    (r,) = cont.history
    assert (r["epoch"], r["k"], r["step"]) == (0, 8, 3 * cfg.steps_per_epoch)
    assert r["train_examples"] == cfg.steps_per_epoch * cfg.batch_size  # accumulators reset


def test_init_from_a_different_model_is_one_clear_error(straight, cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"holds a different model \(num_units: 32 there, "
                                          r"100 here\)"):
        train(cfg.replace(num_units=100), tmp_path, init_from=straight.out_dir, **QUIET)


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(cfg, tmp_path):
    """Images turn NaN after the first epoch (a host-read dataset, as from a corrupt file)."""
    ds = get_dataset("dsprites", "procedural")
    poisoned = {"on": False}

    def render(f):
        x = np.asarray(ds.render(jnp.asarray(f)))
        return np.full_like(x, np.nan) if poisoned["on"] else x

    host = FactorDataset("dsprites", "file", ds.space, ds.observation_shape, render,
                         on_device=False)
    with pytest.raises(TrainingDiverged, match=r"NaN or Inf at step 3 .*last good checkpoint "
                                               r"\(step 3\)"):
        train(cfg, tmp_path, dataset=host, on_epoch=lambda r: poisoned.update(on=True),
              **QUIET)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.all_steps() == [3]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_existing_run_is_not_overwritten_and_resume_checks_the_config(straight, cfg):
    with pytest.raises(RunExistsError, match="already holds a run"):
        train(cfg, straight.out_dir, **QUIET)
    with pytest.raises(ConfigError, match=r"cannot resume.*beta.*only .*learning_rate.* may "
                                          r"change on resume"):
        train(cfg.replace(beta=2.0), straight.out_dir, resume=True, **QUIET)
    # the check reads the config the checkpoint carries, not config.json
    saved = (straight.out_dir / "config.json").read_text()
    (straight.out_dir / "config.json").unlink()
    try:
        with pytest.raises(ConfigError, match="cannot resume.*beta"):
            train(cfg.replace(beta=2.0), straight.out_dir, resume=True, **QUIET)
    finally:
        (straight.out_dir / "config.json").write_text(saved)


def test_a_second_run_on_a_busy_directory_is_refused_before_any_work(cfg, tmp_path):
    hold = ("import sys, time\nfrom sparsejax.dir_lock import DirLock\n"
            "with DirLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryLockedError, match=f"pid {holder.pid}"):
            train(cfg, tmp_path, **QUIET)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_batch_not_divisible_by_devices_is_refused_first(cfg, tmp_path):
    with pytest.raises(ConfigError, match="divisible by the number of devices"):
        train(cfg.replace(batch_size=6), tmp_path, **QUIET)
    assert not (tmp_path / "checkpoints").exists()


def test_dense_baseline_checkpoints_and_resumes(tiny, tmp_path):
    # The dense VAE has no sparse units; its checkpoint must still save and restore.
    cfg = tiny(method="dense", epochs=1)
    first = train(cfg, tmp_path, tensorboard=False, **QUIET)
    assert first.status == "done" and first.history[0]["train_firing_counts"] == []
    restored = load_run(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, _params(restored), _params(first))


def test_init_from_picks_each_runs_source_by_member_and_seed():
    """A group starts from a warm-up's run of its seed, a follow-up of some members from
    those members' runs, and runs a source does not hold are refused by name."""
    from sparsejax.train.loop import _source_runs

    warm = C.preset("smoke", num_seeds=2)
    big = warm.replace(group=("l1", "topk@500", "topk@50"))
    assert _source_runs(big, warm, "w") == [0, 1] * 4  # method-major: each member, seeds
    pair = warm.replace(group=("l1",))
    assert _source_runs(pair, big, "g") == [0, 1, 2, 3]
    assert _source_runs(warm.replace(method="l1"), big, "g") == [2, 3]
    assert _source_runs(warm.replace(group=("topk@50",)), big, "g") == [0, 1, 6, 7]
    assert _source_runs(big, big, "g") == list(range(8))
    with pytest.raises(ConfigError, match=r"l1@80 seed 0"):
        _source_runs(warm.replace(group=("l1@80",)), big, "g")


def test_runs_differing_in_their_evaluation_set_share_the_compiled_step(cfg):
    """A warm-up evaluated at its end on fewer samples than the arms it starts reuses their
    train step; the evaluator is its own. Another model gets its own step. Nothing is
    compiled here: the cache holds jitted functions until their first call."""
    from sparsejax.train import loop
    from sparsejax.train.mesh import make_mesh

    ds, mesh = get_dataset("dsprites", "procedural"), make_mesh()
    arm = loop._compiled(cfg.replace(final_eval_size=96), ds, mesh)
    warm = loop._compiled(cfg, ds, mesh)
    assert warm[1] is arm[1] and warm[3] is arm[3]  # step and epoch reset
    assert warm[2] is not arm[2]  # evaluate
    assert loop._compiled(cfg.replace(final_eval_size=96), ds, mesh)[2] is arm[2]
    other = loop._compiled(cfg.replace(num_latents=4), ds, mesh)
    assert other[1] is not arm[1] and other[2] is not arm[2]
