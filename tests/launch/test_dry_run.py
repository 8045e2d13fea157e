"""The exact gcloud, ssh and SLURM commands the launch scripts run, their quoting, and their
errors: missing gcloud, unknown zone or type, a failed worker."""

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import catalog, gpu, tpu_vm
from launch.common import Completed, LaunchError, SubprocessRunner, run_cli
from launch.tpu_vm import REMOTE_CODE, Job, Tpu, report_workers, run_script

ROOT = Path(__file__).resolve().parents[2]
EVIL = "x; touch pwned; $(touch pwned2) `touch pwned3` 'q\""
SETUP = ('export PATH="$HOME/.local/bin:$PATH" && mkdir -p sparsejax && tar -xzf '
         'sparsejax-src.tar.gz -C sparsejax && rm -f sparsejax-src.tar.gz && { command -v uv '
         '>/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; } && cd sparsejax && '
         f"uv sync --frozen && uv pip install 'jax[tpu]=={tpu_vm.locked_jax_version()}' && "
         ".venv/bin/python -c 'import jax, launch; print(jax.__version__)'")


def dry(capsys, module, *argv):
    rc = module.main([*argv, "--dry-run"] if "--" not in argv else
                     [*argv[:argv.index("--")], "--dry-run", *argv[argv.index("--"):]])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out.splitlines(), captured.err


def ssh_script(line: str) -> str:
    """The remote shell text inside a printed `gcloud ... ssh --command=...` line."""
    (command,) = [a for a in shlex.split(line) if a.startswith("--command=")]
    return command.removeprefix("--command=")


# --------------------------------------------------------------------------- TPU VM

def test_tpu_up_single_host_pins_every_command(capsys):
    lines, err = dry(capsys, tpu_vm, "up", "--name", "sj-paper", "--zone", "us-west4-a",
                     "--accelerator-type", "v5litepod-8", "--spot", "--", "collapse",
                     "--preset", "paper")
    z = "--zone=us-west4-a"
    tarball = ROOT / "runs" / "launch" / "sj-paper-src.tar.gz"
    assert lines[:3] == [
        f"gcloud compute tpus tpu-vm create sj-paper --accelerator-type=v5litepod-8 "
        f"--version=v2-alpha-tpuv5-lite --spot {z}",
        f"git -C {ROOT} archive --format=tar.gz --output={tarball} HEAD",
        f"gcloud compute tpus tpu-vm scp {tarball} sj-paper:sparsejax-src.tar.gz --worker=all "
        f"--quiet {z}",
    ]
    assert lines[3] == shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "ssh", "sj-paper",
                                   "--worker=all", f"--command={SETUP}", "--quiet", z])
    assert ssh_script(lines[4]) == (
        'export PATH="$HOME/.local/bin:$PATH"; cd sparsejax || exit 1; '
        "mkdir -p ../sparsejax-runs/sj-paper; .venv/bin/python -m launch.worker -- collapse "
        "--preset paper --out ../sparsejax-runs/sj-paper")
    assert lines[4].startswith("gcloud compute tpus tpu-vm ssh sj-paper --worker=all '--command=")
    assert lines[4].endswith(f"' --quiet {z}")
    assert lines[5:] == [
        f"gcloud compute tpus tpu-vm scp --recurse sj-paper:sparsejax-runs/sj-paper runs/tpu "
        f"--worker=0 --quiet {z}",
        f"gcloud compute tpus tpu-vm delete sj-paper --quiet {z}",
    ]
    assert "8 chip(s) on 1 host(s)" in err and "$9.60/hour" in err  # the cost estimate


def test_tpu_multi_host_run_initialises_jax_distributed_on_every_worker(capsys):
    lines, _ = dry(capsys, tpu_vm, "run", "--name", "big", "--zone", "us-central2-b",
                   "--accelerator-type", "v4-32", "--project", "my-proj-1", "--resume", "--",
                   "train", "--preset", "paper")
    (line,) = lines
    assert line.startswith("gcloud compute tpus tpu-vm ssh big --worker=all ")
    assert line.endswith(" --quiet --zone=us-central2-b --project=my-proj-1")
    assert ssh_script(line).endswith(".venv/bin/python -m launch.worker --auto -- train "
                                     "--preset paper --out ../sparsejax-runs/big --resume")


def test_tpu_queued_resource_create_waits_and_delete_forces(capsys):
    lines, err = dry(capsys, tpu_vm, "create", "--name", "q1", "--zone", "us-east5-a",
                     "--accelerator-type", "v6e-8", "--queued", "--spot")
    assert lines == [
        "gcloud compute tpus queued-resources create q1 --node-id=q1 --accelerator-type=v6e-8 "
        "--runtime-version=v2-alpha-tpuv6e --spot --zone=us-east5-a",
        "gcloud compute tpus queued-resources describe q1 '--format=value(state.state)' "
        "--zone=us-east5-a",
    ]
    assert "until the state is READY/ACTIVE" in err
    lines, _ = dry(capsys, tpu_vm, "delete", "--name", "q1", "--zone", "us-east5-a",
                   "--accelerator-type", "v6e-8", "--queued")
    assert lines == ["gcloud compute tpus queued-resources delete q1 --force --quiet "
                     "--zone=us-east5-a"]


def test_tpu_sweep_gives_each_host_its_share_and_fetch_merges_them(capsys):
    args = ["--name", "sw", "--zone", "us-central2-b", "--accelerator-type", "v4-16",
            "--grid", "dataset=dsprites,shapes3d", "--grid", "seed=0,1,2"]
    lines, _ = dry(capsys, tpu_vm, "run", *args, "--", "collapse", "--preset", "paper")
    assert len(lines) == 2
    for w, line in enumerate(lines):
        assert f"--worker={w} " in line
        assert ssh_script(line).endswith(
            ".venv/bin/python -m launch.sweep collapse --grid dataset=dsprites,shapes3d --grid "
            f"seed=0,1,2 --out ../sparsejax-runs/sw --platform tpu --shard {w}/2 -- --preset paper")
    lines, _ = dry(capsys, tpu_vm, "fetch", *args)
    assert lines == [f"gcloud compute tpus tpu-vm scp --recurse sw:sparsejax-runs/sw runs/tpu "
                     f"--worker={w} --quiet --zone=us-central2-b" for w in range(2)]


def test_tpu_bucket_mirror_restore_and_fetch(capsys):
    args = ["--name", "m", "--zone", "us-central2-b", "--accelerator-type", "v4-8",
            "--bucket", "gs://my-bucket/sj", "--to", "results"]
    lines, _ = dry(capsys, tpu_vm, "run", *args, "--", "collapse")
    script = ssh_script(lines[0])
    assert ("gcloud storage rsync --recursive gs://my-bucket/sj/m ../sparsejax-runs/m "
            "2>/dev/null || true") in script
    assert script.endswith("gcloud storage rsync --recursive ../sparsejax-runs/m "
                           'gs://my-bucket/sj/m; exit "$rc"')
    lines, _ = dry(capsys, tpu_vm, "fetch", *args)
    assert lines == ["gcloud storage rsync --recursive gs://my-bucket/sj/m results/m"]
    with pytest.raises(LaunchError, match="needs shared storage"):
        tpu_vm.main(["run", *args[:5], "v4-32", *args[6:], "--dry-run", "--", "collapse"])


def test_tpu_watch_dry_run_shows_a_preemption_cycle(capsys):
    lines, err = dry(capsys, tpu_vm, "watch", "--name", "w", "--zone", "us-central2-b",
                     "--accelerator-type", "v4-8", "--ref", "v0.1",
                     "--repo", "https://github.com/example/sparsejax.git", "--", "collapse")
    verbs = [" ".join(shlex.split(line)[3:5]) if line.startswith("gcloud compute") else
             line.split()[0] for line in lines]
    assert verbs == ["tpu-vm create", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm describe",
                     "tpu-vm delete", "tpu-vm create", "tpu-vm ssh", "tpu-vm ssh", "tpu-vm scp",
                     "tpu-vm delete"]
    assert "git clone --depth 1 --branch v0.1 https://github.com/example/sparsejax.git " \
           "sparsejax" in ssh_script(lines[1])
    assert not ssh_script(lines[2]).endswith("--resume")
    assert ssh_script(lines[7]).endswith("--out ../sparsejax-runs/w --resume")
    assert "no --bucket" in err


def test_no_config_value_reaches_a_shell_unquoted(tmp_path, capsys):
    """Run the printed remote script in a real shell: the value arrives as one argument."""
    lines, _ = dry(capsys, tpu_vm, "run", "--name", "inj", "--zone", "us-central2-b",
                   "--accelerator-type", "v4-8", "--", "collapse", "--note", EVIL)
    home = tmp_path / "home"
    venv = home / "sparsejax" / ".venv" / "bin"
    venv.mkdir(parents=True)
    argfile = tmp_path / "argv.txt"
    (venv / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(argfile))}\n')
    (venv / "python").chmod(0o755)
    r = subprocess.run(["bash", "-c", ssh_script(lines[0])], cwd=home, capture_output=True,
                       text=True, env={**os.environ, "HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert argfile.read_text().splitlines() == [
        "-m", "launch.worker", "--", "collapse", "--note", EVIL, "--out",
        "../sparsejax-runs/inj"]
    assert not list(home.rglob("pwned*")) and not list(tmp_path.glob("pwned*"))


@pytest.mark.parametrize("argv, message", [
    (["--zone", "us-central1-z", "--accelerator-type", "v4-8"],
     "unknown zone 'us-central1-z' for v4 (v4-8); known zones: us-central2-b"),
    (["--zone", "us-central2-b", "--accelerator-type", "v4-12"],
     "unknown accelerator type 'v4-12': v4 comes as v4-8, v4-16"),
    (["--zone", "us-central2-b", "--accelerator-type", "v9-8"],
     "unknown accelerator type 'v9-8'; known generations"),
    (["--zone", "x; rm -rf /", "--accelerator-type", "v4-8"], "bad zone 'x; rm -rf /'"),
    (["--zone", "us-central2-b", "--accelerator-type", "v4-8; rm -rf /"],
     "bad accelerator type 'v4-8; rm -rf /'"),
])
def test_unknown_zone_or_type_is_refused_with_the_choices(argv, message, capsys):
    assert run_cli(tpu_vm.main, ["create", "--name", "t", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")


def test_allow_unknown_overrides_the_catalog(capsys):
    lines, _ = dry(capsys, tpu_vm, "create", "--name", "t", "--zone", "us-central1-z",
                   "--accelerator-type", "v4-8", "--allow-unknown")
    assert lines == ["gcloud compute tpus tpu-vm create t --accelerator-type=v4-8 "
                     "--version=tpu-ubuntu2204-base --zone=us-central1-z"]
    with pytest.raises(LaunchError, match="pass --version"):
        tpu_vm.main(["create", "--name", "t", "--zone", "us-central1-z", "--accelerator-type",
                     "v9-8", "--allow-unknown", "--dry-run"])


@pytest.mark.parametrize("argv, message", [
    (["--name", "Bad_Name"], "bad --name 'Bad_Name'"),
    (["--name", "ok", "--project", "p; ls"], "bad --project 'p; ls'"),
    (["--name", "ok", "--run-id", "../x"], "bad --run-id '../x'"),
    (["--name", "ok", "--bucket", "s3://x"], "bad --bucket 's3://x'"),
])
def test_bad_names_are_refused(argv, message):
    with pytest.raises(LaunchError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tpu_vm.main(["run", *argv, "--zone", "us-central2-b", "--accelerator-type", "v4-8",
                     "--dry-run", "--", "collapse"])


def test_study_is_checked_and_out_is_owned_by_the_launcher():
    base = ["run", "--name", "t", "--zone", "us-central2-b", "--accelerator-type", "v4-8",
            "--dry-run", "--"]
    with pytest.raises(LaunchError, match="unknown study 'colapse'"):
        tpu_vm.main([*base, "colapse"])
    with pytest.raises(LaunchError, match="do not pass --out"):
        tpu_vm.main([*base, "collapse", "--out", "x"])
    with pytest.raises(LaunchError, match="needs the study after --"):
        tpu_vm.main(base[:-1])


def fake_gcloud(tmp_path: Path, body: str) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "gcloud"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin"}


def test_missing_gcloud_is_reported(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "launch.tpu_vm", "delete", "--name", "t", "--zone",
                        "us-central2-b", "--accelerator-type", "v4-8"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "error: 'gcloud' was not found on PATH. Install the Google Cloud SDK" in r.stderr


def test_failed_worker_is_named(tmp_path):
    """A stub gcloud plays a 2-host slice where process 1 fails."""
    env = fake_gcloud(tmp_path, (
        'echo "[launch.worker] process 0/2 on t1v-w-0: exit 0"\n'
        'echo "Traceback: boom" \n'
        'echo "[launch.worker] process 1/2 on t1v-w-1: exit 3"\n'
        "exit 1\n"))
    r = subprocess.run([sys.executable, "-m", "launch.tpu_vm", "run", "--name", "t", "--zone",
                        "us-central2-b", "--accelerator-type", "v4-16", "--", "collapse"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert "run failed: process 1 on t1v-w-1 exited 3" in r.stderr
    assert "Traceback: boom" in r.stdout


def test_report_workers_names_silent_workers():
    notes = []
    assert report_workers(255, ["[launch.worker] process 0/4 on h0: exit 0"], 4,
                          notes.append) == 255
    assert "3 of 4 worker(s) ended without the study's exit line" in notes[0]
    assert report_workers(0, [f"[launch.worker] process {i}/2 on h{i}: exit 0" for i in range(2)],
                          2, notes.append) == 0


def test_failed_sweep_worker_is_named(tmp_path):
    env = fake_gcloud(tmp_path, 'case "$*" in *--worker=1*) echo oops; exit 4;; esac\nexit 0\n')
    r = subprocess.run([sys.executable, "-m", "launch.tpu_vm", "run", "--name", "t", "--zone",
                        "us-central2-b", "--accelerator-type", "v4-16", "--grid", "seed=0,1",
                        "--", "collapse"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 4
    assert "sweep failed on worker 1 (exit 4)" in r.stderr and "[worker 1] oops" in r.stdout


def test_catalog_hosts_and_costs():
    assert (catalog.tpu_type("v4-32").chips, catalog.tpu_type("v4-32").hosts) == (16, 4)
    assert (catalog.tpu_type("v5litepod-8").chips, catalog.tpu_type("v5litepod-8").hosts) == (8, 1)
    assert catalog.tpu_type("v5litepod-16").hosts == 4
    assert catalog.tpu_type("v6e-8").hosts == 1 and catalog.tpu_type("v5p-8").chips == 4
    assert catalog.tpu_type("v5litepod-8").usd_per_hour() == pytest.approx(9.6)
    assert "v5litepod-8" in catalog.known_types()


# --------------------------------------------------------------------------- GPU

def test_gpu_local_is_one_process_over_the_chosen_gpus(capsys):
    lines, _ = dry(capsys, gpu, "local", "--gpus", "0,1", "--python", "python", "--",
                   "collapse", "--preset", "paper")
    assert lines == ["CUDA_VISIBLE_DEVICES=0,1 python -m launch.worker -- collapse --preset paper"]


def test_gpu_node_explicit_flags(capsys):
    lines, _ = dry(capsys, gpu, "node", "--coordinator", "10.0.0.1:1234", "--num-processes", "4",
                   "--process-id", "3", "--python", "python", "--", "train", "--note", EVIL)
    assert lines == [shlex.join(["python", "-m", "launch.worker", "--coordinator", "10.0.0.1:1234",
                                 "--num-processes", "4", "--process-id", "3", "--", "train",
                                 "--note", EVIL])]
    with pytest.raises(LaunchError, match="--process-id must be in 0..3"):
        gpu.main(["node", "--coordinator", "h:1", "--num-processes", "4", "--process-id", "4",
                  "--dry-run", "--", "train"])
    with pytest.raises(LaunchError, match="needs all of --coordinator"):
        gpu.main(["node", "--coordinator", "h:1", "--dry-run", "--", "train"])


def test_gpu_node_from_slurm(capsys):
    env = {"SLURM_JOB_ID": "1234", "SLURM_NTASKS": "4", "SLURM_PROCID": "2",
           "SLURM_JOB_NODELIST": "gpu[003-007,010],cpu1"}
    assert gpu.main(["node", "--python", "python", "--dry-run", "--", "collapse"],
                    environ=env) == 0
    # the port follows jax's own SLURM rule: job id % 4096 + 61440
    assert capsys.readouterr().out.splitlines() == [
        "python -m launch.worker --coordinator gpu003:62674 --num-processes 4 --process-id 2 "
        "-- collapse"]
    with pytest.raises(LaunchError, match="missing SLURM_JOB_ID, SLURM_NTASKS"):
        gpu.main(["node", "--dry-run", "--", "collapse"], environ={})


@pytest.mark.parametrize("nodelist, first", [("node001", "node001"), ("a1,b2", "a1"),
                                             ("gpu[07-09]", "gpu07"), ("n[1,3-5],m", "n1")])
def test_first_slurm_host(nodelist, first):
    assert gpu.first_slurm_host(nodelist) == first


def test_gpu_ssh_starts_one_process_per_host(tmp_path, capsys):
    lines, _ = dry(capsys, gpu, "ssh", "--hosts", "me@h0,h1", "--port", "2222", "--",
                   "collapse", "--note", EVIL)
    assert [shlex.split(line)[:5] for line in lines] == [
        ["ssh", "-o", "BatchMode=yes", "--", "me@h0"], ["ssh", "-o", "BatchMode=yes", "--", "h1"]]
    remote = shlex.split(lines[1])[5]
    assert remote.startswith("cd sparsejax && .venv/bin/python -m launch.worker --coordinator "
                             "h0:2222 --num-processes 2 --process-id 1 -- collapse --note ")
    # the remote shell reads EVIL back as one argument
    venv = tmp_path / "sparsejax" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (venv / "python").chmod(0o755)
    r = subprocess.run(["bash", "-c", remote], cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.splitlines()[-1] == EVIL and not list(tmp_path.glob("pwned*"))
    with pytest.raises(LaunchError, match="bad host '-oProxyCommand=x'"):
        gpu.main(["ssh", "--hosts", "h0,-oProxyCommand=x", "--dry-run", "--", "collapse"])


def test_gpu_ssh_names_the_failed_host():
    class Runner(SubprocessRunner):
        def parallel(self, commands):
            return {name: (5 if "process 1" in name else 0) for name in commands}

    notes = []
    runner = Runner()
    runner.note = notes.append
    assert gpu.main(["ssh", "--hosts", "h0,h1", "--", "collapse"], runner=runner) == 1
    assert notes == ["failed: process 1 on h1 exited 5"]


def test_gpu_sbatch_script(capsys):
    lines, err = dry(capsys, gpu, "sbatch", "--nodes", "2", "--gpus-per-node", "4", "--time",
                     "12:00:00", "--partition", "a100", "--", "collapse", "--preset", "paper")
    assert lines == [f"sbatch {ROOT}/runs/slurm/sparsejax.sbatch"]
    assert err.splitlines() == [
        "# #!/bin/bash", "# #SBATCH --job-name=sparsejax", "# #SBATCH --nodes=2",
        "# #SBATCH --ntasks-per-node=1", "# #SBATCH --gpus-per-node=4",
        "# #SBATCH --time=12:00:00", "# #SBATCH --partition=a100",
        f"# #SBATCH --output={ROOT}/runs/slurm/%x-%j.out", "# set -euo pipefail",
        f"# cd {ROOT}",
        "# srun .venv/bin/python -m launch.gpu node --python .venv/bin/python -- collapse "
        "--preset paper"]
    with pytest.raises(LaunchError, match="bad value for SLURM --partition"):
        gpu.main(["sbatch", "--nodes", "1", "--partition", "a\n#SBATCH --x", "--dry-run", "--",
                  "collapse"])


def test_run_script_without_bucket_is_plain():
    tpu = Tpu("t", "us-central2-b", catalog.tpu_type("v4-8"), "v")
    job = Job(("collapse",), "r")
    assert run_script(job.command(tpu, resume=False), job) == (
        'export PATH="$HOME/.local/bin:$PATH"; cd sparsejax || exit 1; '
        "mkdir -p ../sparsejax-runs/r; "
        ".venv/bin/python -m launch.worker -- collapse --out ../sparsejax-runs/r")


# --------------------------------------------------------------------------- names become paths

class RecordingRunner(SubprocessRunner):
    """Runs nothing (not even in a real run): records the commands."""

    def __init__(self):
        super().__init__()
        self.commands = []

    def run(self, argv, *, capture=False, check=True, what=None):
        self.commands.append([str(a) for a in argv])
        return Completed([str(a) for a in argv], 0)


@pytest.mark.parametrize("name", ["../../x", "../x", "a/b", "{tmp}/abs", ".hidden", "..", ".", "",
                                  "x y", "x\n#SBATCH --x", "-x", "x" * 101])
@pytest.mark.parametrize("dry_run", [False, True])
def test_gpu_sbatch_refuses_a_job_name_that_is_not_a_plain_file_name(name, dry_run, tmp_path,
                                                                     monkeypatch, capsys):
    """`--job-name ../../x` used to write the script outside runs/slurm; now: one line, exit 2,
    nothing written and nothing submitted."""
    name = name.replace("{tmp}", str(tmp_path))  # an absolute path, kept inside the test's dir
    monkeypatch.setattr(gpu, "ROOT", tmp_path / "root")
    runner = RecordingRunner()
    runner.dry_run = dry_run
    argv = ["sbatch", "--nodes", "1", f"--job-name={name}", "--", "collapse"]
    assert run_cli(lambda a: gpu.main(a, runner=runner), argv) == 2
    err = capsys.readouterr().err
    assert err == (f"error: bad --job-name {name!r}; it becomes a file or directory name: "
                   "expected letters, digits and ._+-, starting with a letter or digit, "
                   "at most 100 characters\n")
    assert not list(tmp_path.rglob("*")) and runner.commands == []


def test_gpu_sbatch_writes_a_good_job_name_under_runs_slurm(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "ROOT", tmp_path)
    runner = RecordingRunner()
    assert gpu.main(["sbatch", "--nodes", "1", "--job-name", "ab.1+2_c-d", "--", "collapse"],
                    runner=runner) == 0
    script = tmp_path / "runs" / "slurm" / "ab.1+2_c-d.sbatch"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [script]
    assert "#SBATCH --job-name=ab.1+2_c-d\n" in script.read_text()
    assert runner.commands == [["sbatch", str(script)]]


@pytest.mark.parametrize("run_id", ["../x", "a/b", ".hidden", "..", "x y", "-x", "x" * 101])
def test_tpu_run_id_must_be_a_plain_directory_name(run_id, capsys):
    argv = ["run", "--name", "ok", "--zone", "us-central2-b", "--accelerator-type", "v4-8",
            f"--run-id={run_id}", "--dry-run", "--", "collapse"]
    assert run_cli(tpu_vm.main, argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"error: bad --run-id {run_id!r}; it becomes a file or directory "
                            "name: expected letters, digits and ._+-, starting with a letter or "
                            "digit, at most 100 characters\n")


def test_names_share_one_rule_with_the_grid():
    """One definition of the safe characters: a grid value made of them is kept verbatim in a
    point's directory name, and a name made of them (not hidden) is accepted."""
    from launch.common import check_name
    from launch.grid import Point

    for value in ["a", "a.b+c_d-e", "0.5", "1e-3"]:
        assert Point((("k", value),)).id == f"k={value}"
        assert check_name(value, "--x") == value
    assert Point((("k", "a/b"),)).id.startswith("k=a_b~")
    with pytest.raises(LaunchError, match="bad --x 'a/b'"):
        check_name("a/b", "--x")


# --------------------------------------------------------------------------- the bucket mirror

# the shells a worker's login shell may be (sh is often dash), each once
SHELLS = list({os.path.realpath(p): s for s in ("bash", "dash", "sh")
               if (p := shutil.which(s))}.values())


def session_processes(sid: int) -> dict[int, str]:
    """The live processes of session ``sid`` (pid -> command name), from /proc."""
    found = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:
            continue
        head, _, tail = text.rpartition(")")
        state, _ppid, _pgrp, session = tail.split()[:4]
        if int(session) == sid and state != "Z":
            found[int(stat_file.parent.name)] = head.partition("(")[2]
    return found


def replay(script: str, tmp_path: Path, shell: str, *, study: str, push_s: float = 0,
           timeout_s: float = 30) -> dict:
    """Run a generated remote script as a worker would, with stand-ins: a `gcloud` that records
    its calls (a push lasts ``push_s`` and notes an overlap with another push), and a study."""
    home = tmp_path / "home"
    venv = home / REMOTE_CODE / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f"#!/bin/sh\n{study}\n")
    (venv / "python").chmod(0o755)
    calls, lock = tmp_path / "calls.txt", tmp_path / "push.lock"
    env = fake_gcloud(tmp_path, (
        f'calls={shlex.quote(str(calls))}; lock={shlex.quote(str(lock))}\n'
        'case "$4" in gs://*) echo "restore" >> "$calls"; exit 0;; esac\n'
        'mkdir "$lock" 2>/dev/null || echo "OVERLAP" >> "$calls"\n'
        f'echo "push $*" >> "$calls"; sleep {push_s}; rmdir "$lock" 2>/dev/null\n'))
    env["HOME"] = str(home)
    proc = subprocess.Popen([shell, "-c", script], cwd=home, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    hung = False
    try:
        start = time.monotonic()
        try:
            proc.communicate(timeout=timeout_s)  # returns once nothing holds its output open
        except subprocess.TimeoutExpired:
            hung = True
            proc.kill()
            proc.wait()
        elapsed = time.monotonic() - start
        deadline = time.monotonic() + 5  # a killed process may take a moment to go
        while (left := session_processes(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for pid in session_processes(proc.pid):  # only what this replay started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return {"rc": proc.returncode, "hung": hung, "elapsed": elapsed, "left": left,
            "calls": calls.read_text().splitlines() if calls.exists() else []}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("study", ["sleep 0.5; exit 3", "exit 3"])  # the mirror asleep, starting
def test_dry_run_bucket_script_replay_returns_and_leaves_no_sleep(shell, study, tmp_path, capsys):
    """The mirror used to be stopped with `kill "$mirror"`, which left its `sleep 300` running
    and holding the output open: the replay hung for minutes."""
    lines, _ = dry(capsys, tpu_vm, "run", "--name", "m", "--zone", "us-central2-b",
                   "--accelerator-type", "v4-8", "--bucket", "gs://my-bucket/sj", "--",
                   "collapse")
    script = ssh_script(lines[0])
    r = replay(script, tmp_path, shell, study=study)
    assert not r["hung"], f"the replay hung; left running: {r['left']}"
    assert r["left"] == {}, "the mirror left processes behind"
    assert r["rc"] == 3  # the study's exit code, after the final push
    push = "push storage rsync --recursive ../sparsejax-runs/m gs://my-bucket/sj/m"
    assert r["calls"] == ["restore", push]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("shell", SHELLS)
def test_mirror_pushes_while_the_run_lasts_then_stops_whole(shell, tmp_path):
    """With a short interval: pushes during the run, a final push after it, never two at once
    (a push in flight when the run ends finishes first), and nothing left behind."""
    tpu = Tpu("t", "us-central2-b", catalog.tpu_type("v4-8"), "v")
    job = Job(("collapse",), "r", bucket="gs://my-bucket/sj", mirror_every_s=1)
    script = run_script(job.command(tpu, resume=False), job)
    r = replay(script, tmp_path, shell, study="sleep 2.5", push_s=0.4)
    assert not r["hung"] and r["left"] == {}
    assert r["rc"] == 0 and r["elapsed"] < 20
    push = "push storage rsync --recursive ../sparsejax-runs/r gs://my-bucket/sj/r"
    assert "OVERLAP" not in r["calls"]
    assert r["calls"][0] == "restore" and r["calls"][1:] == [push] * (len(r["calls"]) - 1)
    assert len(r["calls"]) >= 3  # at least one push by the mirror, then the final one
