"""The sweep launcher end to end: its dry run, and a real sweep over 4 simulated devices that
is killed and resumed and still runs every point once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.common import LaunchError
from launch.grid import expand, parse_grid
from launch.sweep import main

ROOT = Path(__file__).resolve().parents[2]
FAKE = "tests.launch.fake_study"


# --------------------------------------------------------------------------- dry runs

def test_dry_run_prints_exactly_the_commands(tmp_path, capsys):
    out = tmp_path / "sw"
    rc = main(["collapse", "--grid", "dataset=dsprites,shapes3d", "--grid", "seed=0,1,2",
               "--out", str(out), "--platform", "gpu", "--devices", "0,1", "--python", "python",
               "--dry-run", "--", "--preset", "paper"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    common = "python -m experiments collapse --preset paper"
    assert lines == [
        f"SPARSEJAX_SWEEP_SLOT=0 JAX_COORDINATOR_ADDRESS=127.0.0.1:8477 CUDA_VISIBLE_DEVICES=0 "
        f"{common} --dataset dsprites --seed 0 --seeds 3 --out {out}/dataset=dsprites,seed=0+1+2",
        f"SPARSEJAX_SWEEP_SLOT=1 JAX_COORDINATOR_ADDRESS=127.0.0.1:8479 CUDA_VISIBLE_DEVICES=1 "
        f"{common} --dataset shapes3d --seed 0 --seeds 3 --out {out}/dataset=shapes3d,seed=0+1+2",
    ]
    assert not out.exists()  # a dry run writes nothing
    # the study's profile (3 seeds per process) is overridden by --per-process
    main(["collapse", "--grid", "seed=0,1", "--out", str(out), "--platform", "cpu",
          "--devices", "2", "--python", "python", "--per-process", "1", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" --out ")[0].split("collapse ")[1] for line in lines] == ["--seed 0",
                                                                                  "--seed 1"]
    assert all("JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=1 " in line for line in lines)


def test_grid_key_also_given_after_dashes_is_refused(tmp_path):
    with pytest.raises(LaunchError, match="both a grid axis and a fixed study argument"):
        main(["train", "--grid", "seed=0,1", "--out", str(tmp_path), "--platform", "cpu",
              "--dry-run", "--", "--seed", "3"])


# --------------------------------------------------------------------------- real sweeps

def sweep_cmd(out: Path, ledger: Path, *extra: str, steps: int = 16,
              grid=("a=x,y", "seed=0,1,2,3")):
    argv = [sys.executable, "-m", "launch.sweep", "fake", "--module", FAKE, "--platform", "cpu",
            "--devices", "4", "--out", str(out), "--grace", "20"]
    for g in grid:
        argv += ["--grid", g]
    return [*argv, *extra, "--", "--ledger", str(ledger), "--steps", str(steps),
            "--step-s", "0.05"]


def run_sweep(argv, timeout=60):
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def ledger_rows(ledger: Path) -> list[dict]:
    return [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def ckpt_step(task_dir: Path) -> int:
    try:
        return json.loads((task_dir / "ckpt.json").read_text())["step"]
    except (OSError, json.JSONDecodeError, KeyError):
        return 0


def check_exactly_once(out: Path, ledger: Path, n_points: int):
    rows = ledger_rows(ledger)
    finished = [Path(r["out"]).name for r in rows]
    assert sorted(finished) == sorted(set(finished)), f"a point finished twice: {finished}"
    assert len(finished) == n_points
    for r in rows:
        assert json.loads((Path(r["out"]) / "results.json").read_text())["pid"] == r["pid"]
        assert r["num_cpu_devices"] == "1" and r["slot"] in {"0", "1", "2", "3"}
    # no two tasks overlapping in time shared a device
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["slot"] == b["slot"]:
                assert a["t1"] <= b["t0"] or b["t1"] <= a["t0"], (a["out"], b["out"])
    assert len(list((out / ".sweep" / "done").glob("*.json"))) == n_points
    return {Path(r["out"]).name: r for r in rows}


def test_killed_study_process_is_resumed_once(tmp_path):
    out, ledger = tmp_path / "sweep", tmp_path / "ledger.jsonl"
    proc = subprocess.Popen(sweep_cmd(out, ledger), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim = out / "a=x,seed=1"
    wait_for(lambda: ckpt_step(victim) >= 3, what="the victim to checkpoint")
    os.kill(json.loads((victim / "pid.json").read_text())["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "FAIL  a=x,seed=1: exit code -9" in err
    assert "7/8 points done" in err and "run the same command again" in err
    assert len(ledger_rows(ledger)) == 7

    again = run_sweep(sweep_cmd(out, ledger))
    assert again.returncode == 0, again.stderr
    assert "7 already done in this shard, 1 to run" in again.stderr
    assert "start a=x,seed=1 on cpu:0" in again.stderr and "resuming" in again.stderr
    rows = check_exactly_once(out, ledger, 8)
    assert rows["a=x,seed=1"]["resumed_from"] >= 3
    assert all(r["resumed_from"] == 0 for k, r in rows.items() if k != "a=x,seed=1")

    third = run_sweep(sweep_cmd(out, ledger))
    assert third.returncode == 0 and "8 already done in this shard, 0 to run" in third.stderr
    assert len(ledger_rows(ledger)) == 8


def test_killed_launcher_stops_its_tasks_and_the_rerun_finishes_them_once(tmp_path):
    out, ledger = tmp_path / "sweep", tmp_path / "ledger.jsonl"
    proc = subprocess.Popen(sweep_cmd(out, ledger, steps=30), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "a=x,seed=0"
    wait_for(lambda: ckpt_step(first) >= 3, what="the first task to checkpoint")
    proc.kill()  # SIGKILL: no chance to clean up; its tasks get SIGTERM from the kernel
    proc.wait(timeout=10)
    pids = [json.loads((out / f"a=x,seed={s}" / "pid.json").read_text())["pid"] for s in range(4)]

    def all_gone():
        for pid in pids:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                pass
        return True

    wait_for(all_gone, timeout=20, what="the orphaned tasks to stop")
    assert not ledger_rows(ledger)
    again = run_sweep(sweep_cmd(out, ledger, steps=30))
    assert again.returncode == 0, again.stderr
    rows = check_exactly_once(out, ledger, 8)
    assert rows["a=x,seed=0"]["resumed_from"] >= 3


def test_sigterm_to_the_launcher_saves_every_task_and_the_rerun_resumes(tmp_path):
    out, ledger = tmp_path / "sweep", tmp_path / "ledger.jsonl"
    proc = subprocess.Popen(sweep_cmd(out, ledger, steps=30), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: all(ckpt_step(out / f"a=x,seed={s}") >= 2 for s in range(4)),
             what="four tasks to checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: asking 4 running task(s) to save and stop" in err
    assert not list((out / ".sweep" / "done").glob("*.json")) and not ledger_rows(ledger)
    for s in range(4):
        assert "SIGTERM: saved step" in (out / ".sweep" / "logs" / f"a=x,seed={s}.log").read_text()
    again = run_sweep(sweep_cmd(out, ledger, steps=30))
    assert again.returncode == 0, again.stderr
    rows = check_exactly_once(out, ledger, 8)
    assert all(rows[f"a=x,seed={s}"]["resumed_from"] >= 2 for s in range(4))


def test_grouped_tasks_and_a_second_sweep_on_the_same_out_is_refused(tmp_path):
    out, ledger = tmp_path / "sweep", tmp_path / "ledger.jsonl"
    argv = sweep_cmd(out, ledger, "--per-process", "2", "--group-key", "seed",
                     "--group-flag", "seeds", steps=20)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: (out / ".sweep" / "plan.json").exists(), what="the first sweep to start")
    second = run_sweep(argv)
    assert second.returncode == 2 and "another sweep is running on" in second.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = ledger_rows(ledger)
    assert sorted(r["seeds"] for r in rows) == ["0,1", "0,1", "2,3", "2,3"]
    assert sorted(Path(r["out"]).name for r in rows) == [
        "a=x,seed=0+1", "a=x,seed=2+3", "a=y,seed=0+1", "a=y,seed=2+3"]
    done = {p for f in (out / ".sweep" / "done").glob("*.json")
            for p in json.loads(f.read_text())["points"]}
    assert done == {p.id for p in expand(parse_grid(["a=x,y", "seed=0,1,2,3"]))}
    # per point bookkeeping: regrouping later does not rerun anything
    again = run_sweep(sweep_cmd(out, ledger))
    assert again.returncode == 0 and "0 to run" in again.stderr


def test_failing_study_is_reported_with_its_log(tmp_path):
    out = tmp_path / "sweep"
    r = run_sweep([sys.executable, "-m", "launch.sweep", "fake", "--module", FAKE,
                   "--platform", "cpu", "--devices", "2", "--out", str(out), "--grid",
                   "a=x", "--", "--steps", "1"])  # no --ledger: the study refuses to start
    assert r.returncode == 1
    assert "FAIL  a=x: exit code 2" in r.stderr
    assert "the following arguments are required: --ledger" in r.stderr  # the log's tail


@pytest.mark.slow
def test_the_engine_train_study_runs_through_the_same_path(tmp_path):
    """The real `train` study: two seeds of one cell become one process (--seed 0 --seeds 2).
    Vmapped seeds: one copy of the step to compile (CPU's default unrolls them; the
    engine's tests check both seed maps)."""
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "launch.sweep", "train", "--grid", "seed=0,1", "--platform",
            "cpu", "--devices", "1", "--out", str(out), "--", "--dataset", "dsprites",
            "--method", "topk", "--preset", "smoke", "--epochs", "1", "--steps-per-epoch", "2",
            "--set", "num_units=32", "--set", "schedule.start=16", "--set", "schedule.end=8",
            "--set", "schedule.length=1", "--set", "eval_size=64", "--set", "eval_batch=32",
            "--set", "batch_size=8", "--set", "seed_map=vmap", "--no-tensorboard"]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + (out / ".sweep" / "logs" / "seed=0+1.log").read_text()
    results = json.loads((out / "seed=0+1" / "results.json").read_text())
    assert (results["config"]["seed"], results["config"]["num_seeds"]) == (0, 2)
    assert sorted({rec["seed"] for rec in results["history"]}) == [0, 1]
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "2 already done in this shard, 0 to run" in again.stderr
