"""The accelerator check's kernel table (from a synthetic perfetto trace with known sums),
its bench summary, and its refusal of unknown sections."""

import gzip
import json

import numpy as np

from launch import device_check


def _trace(tmp_path, events):
    d = tmp_path / "plugins" / "profile" / "run"
    d.mkdir(parents=True)
    with gzip.open(d / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    return tmp_path


def test_kernel_table_sums_stream_kernels_per_step(tmp_path):
    rng = np.random.default_rng(0)
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "thread_name", "pid": 2, "tid": 7, "args": {"name": "Stream #7"}},
            {"ph": "M", "name": "thread_name", "pid": 2, "tid": 9, "args": {"name": "XLA Ops"}}]
    durs = {"fusion_a": rng.uniform(1, 50, 12), "conv_b": rng.uniform(1, 50, 4)}
    kernels = [{"ph": "X", "pid": 2, "tid": 7, "name": n, "dur": float(d)}
               for n, ds in durs.items() for d in ds]
    # spans on the ops line and host events: not kernels, left out of the ranking
    others = [{"ph": "X", "pid": 2, "tid": 9, "name": "fusion_a", "dur": 1e6},
              {"ph": "X", "pid": 1, "tid": 3, "name": "python", "dur": 1e6}]
    steps = 4
    table = device_check.kernel_table(_trace(tmp_path, meta + kernels + others), steps)
    lines = table.splitlines()
    busy = sum(d.sum() for d in durs.values()) / 1e3 / steps
    assert lines[0] == "device processes: ['/device:GPU:0']"
    assert f"busy {busy:.3f} ms per step over 2 distinct events" == lines[2]
    ranked = sorted(durs, key=lambda n: -durs[n].sum())
    for line, name in zip(lines[4:], ranked):
        ms, calls, share, got = line.split()
        assert got == name
        np.testing.assert_allclose(float(ms), durs[name].sum() / 1e3 / steps, atol=1e-4)
        assert float(calls) == len(durs[name]) / steps
        np.testing.assert_allclose(float(share.rstrip("%")),
                                   100 * durs[name].sum() / 1e3 / steps / busy, atol=0.05)


def test_summary_tabulates_throughput_rows_and_keeps_the_others(tmp_path):
    rows = [{"bench": "train_scale", "runs": 48, "compute_dtype": "bfloat16", "scan_steps": 8,
             "images_per_s": 123456.7, "ms_per_step": 24.88, "floor_images_per_s": 9e5,
             "vs_one_model": 4.2},
            {"bench": "paper_estimate", "main_grid_h": 1.5}]
    (tmp_path / "bench.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    device_check.summary(tmp_path)
    lines = (tmp_path / "summary.txt").read_text().splitlines()
    assert lines[1].split() == ["train_scale", "48", "bfloat16", "8", "123457", "24.88",
                                "900000", "vs_one_model=4.2"]
    assert json.loads(lines[2]) == rows[1]
    assert len(lines) == 3


def test_unknown_section_is_refused_before_anything_runs(tmp_path, capsys):
    assert device_check.main([str(tmp_path / "out"), "bench", "bnech"]) == 2
    assert "sections: env, profile, bench, tests, dry_run, cell" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_each_sections_command_and_runs_nothing(tmp_path, capsys, monkeypatch):
    from launch import devices

    monkeypatch.setattr(devices, "detect_devices", lambda platform: ("gpu", ["0"]))
    assert device_check.main(["--dry-run", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "nvidia-smi"
    bench = next(x for x in lines if " experiments bench " in x)
    assert bench.split("bench", 1)[1].split() == [
        a for n in device_check.BENCHES for a in ("--only", n)]
    tests = next(x for x in lines if " pytest " in x)
    assert tests.startswith("JAX_PLATFORMS=cuda XLA_FLAGS= ") and tests.endswith("tests/ops")
    cell = lines[-1].split()
    assert cell[cell.index("--preset") + 1] == "paper" and "--no-tensorboard" in cell
    assert [cell[cell.index(f) + 1] for f in ("--seeds", "--epochs")] == ["3", "1"]
    assert not (tmp_path / "out").exists()
