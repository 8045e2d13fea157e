"""The accelerators of this machine, and the environment that gives a process one of them.

Devices are found without starting JAX (which would take hold of every TPU chip): TPU chips
from ``/dev/accel*`` or ``/dev/vfio/N``, GPUs from ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

from launch.common import LaunchError, parse_int_list

PLATFORMS = ("auto", "cpu", "gpu", "tpu")
DEFAULT_PORT_BASE = 8476  # libtpu's own default port; slot i uses PORT_BASE + 2i and + 2i + 1


def device_env(platform: str, device: str, slot: int,
               port_base: int = DEFAULT_PORT_BASE) -> dict[str, str]:
    """Environment giving one process exactly one device, and its own ports."""
    runtime_port, coordinator_port = port_base + 2 * slot, port_base + 2 * slot + 1
    env = {"SPARSEJAX_SWEEP_SLOT": str(slot),
           # a unique coordinator for a study that calls jax.distributed.initialize()
           "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{coordinator_port}"}
    if platform == "cpu":
        env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    elif platform == "gpu":
        env.update(CUDA_VISIBLE_DEVICES=device)
    elif platform == "tpu":
        # One chip per process, not talking to the others (libtpu's own variables).
        env.update(TPU_VISIBLE_CHIPS=device, TPU_CHIPS_PER_PROCESS_BOUNDS="1,1,1",
                   TPU_PROCESS_BOUNDS="1,1,1", TPU_PROCESS_PORT=str(runtime_port),
                   TPU_PROCESS_ADDRESSES=f"localhost:{runtime_port}", CLOUD_TPU_TASK_ID="0")
    else:
        raise LaunchError(f"unknown platform {platform!r}; expected one of cpu, gpu, tpu")
    return env


def detect_devices(platform: str) -> tuple[str, list[str]]:
    """This machine's platform and device ids, found without starting JAX (which would take
    hold of every TPU chip)."""
    if platform in ("auto", "tpu"):
        chips = sorted(glob.glob("/dev/accel[0-9]*"), key=lambda p: int(re.sub(r"\D", "", p)))
        if not chips:
            chips = sorted((p for p in glob.glob("/dev/vfio/*") if os.path.basename(p).isdigit()),
                           key=lambda p: int(os.path.basename(p)))
        if chips:
            return "tpu", [str(i) for i in range(len(chips))]
        if platform == "tpu":
            raise LaunchError("--platform tpu but no TPU chips found (/dev/accel*, /dev/vfio/N); "
                              "pass --devices to say which")
    if platform in ("auto", "gpu"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip():
            return "gpu", [d.strip() for d in visible.split(",") if d.strip()]
        if shutil.which("nvidia-smi"):
            r = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                               capture_output=True, text=True)
            ids = [line.strip() for line in r.stdout.splitlines() if line.strip()]
            if r.returncode == 0 and ids:
                return "gpu", ids
        if platform == "gpu":
            raise LaunchError("--platform gpu but no GPU found (nvidia-smi); pass --devices")
    return "cpu", ["0"]


def resolve_devices(platform: str, devices: str | None) -> tuple[str, list[str]]:
    """``--devices N`` (a count) or ``--devices 0,2,3`` (ids) on top of what was detected."""
    if devices is None:
        return detect_devices(platform)
    if platform == "auto":
        platform = detect_devices("auto")[0]
    if "," not in devices and devices.isdigit():
        count = int(devices)
        if count < 1:
            raise LaunchError(f"--devices must be >= 1, got {devices}")
        return platform, [str(i) for i in range(count)]
    return platform, [str(i) for i in parse_int_list(devices, "--devices")]
