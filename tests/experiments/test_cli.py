"""The ``python -m experiments`` entry point, show-data, and the bench runner."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.__main__ import main as experiments_main

ROOT = Path(__file__).resolve().parents[2]


def run_module(*args, devices=1, timeout=300):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_lists_studies(capsys):
    assert experiments_main([]) == 0
    out = capsys.readouterr().out
    assert "show-data" in out and "bench" in out


def test_unknown_study(capsys):
    assert experiments_main(["collapse-everything"]) == 2
    assert "unknown study 'collapse-everything'" in capsys.readouterr().err


def test_show_data_writes_png_single_device(tmp_path):
    # A separate process with one CPU device: the single-device path end to end.
    r = run_module("show-data", "--dataset", "dsprites", "--source", "procedural", "--out",
                   str(tmp_path))
    assert r.returncode == 0, r.stderr
    png = tmp_path / "dsprites_procedural_sweeps.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_data_shapes3d(tmp_path, capsys):
    assert experiments_main(["show-data", "--dataset", "shapes3d", "--source", "procedural",
                             "--out", str(tmp_path)]) == 0
    png = tmp_path / "shapes3d_procedural_sweeps.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


def test_show_data_bad_base(tmp_path, capsys):
    with pytest.raises(SystemExit):
        experiments_main(["show-data", "--dataset", "dsprites", "--source", "procedural",
                          "--out", str(tmp_path), "--base", "0", "0", "99", "0", "0"])
    assert "= 99 is out of range for factor 'orientation'" in capsys.readouterr().err


def test_bench_lists_and_refuses_unknown(capsys):
    assert experiments_main(["bench", "--list"]) == 0
    assert "render" in capsys.readouterr().out.split()
    with pytest.raises(SystemExit):
        experiments_main(["bench", "--only", "nope"])
    assert "unknown bench 'nope'" in capsys.readouterr().err


def test_bench_render_prints_json_lines(capsys, monkeypatch):
    from experiments.bench import render

    # the bench itself, on smaller stand-in files and batches
    monkeypatch.setattr(render, "BATCH", 32)
    monkeypatch.setattr(render, "_STAND_IN_SIZES", {"dsprites": (3, 6, 2, 2, 2),
                                                    "shapes3d": (2, 2, 2, 2, 2, 2)})
    assert experiments_main(["bench", "--only", "render"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["dataset"], r["source"]) for r in rows} == {
        (d, s) for d in ("dsprites", "shapes3d") for s in ("procedural", "file")}
    assert all(r["bench"] == "render" and r["images_per_s"] > 0 for r in rows)
