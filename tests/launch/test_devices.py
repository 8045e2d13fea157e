"""Device environments: one device per process, and ports of its own."""

import pytest

from launch.common import LaunchError
from launch.devices import device_env


def test_device_env_gives_each_process_one_device_and_its_own_ports():
    cpu = device_env("cpu", "2", 2)
    assert cpu["JAX_NUM_CPU_DEVICES"] == "1" and cpu["JAX_PLATFORMS"] == "cpu"
    gpu = device_env("gpu", "3", 1)
    assert gpu["CUDA_VISIBLE_DEVICES"] == "3"
    tpu0, tpu1 = device_env("tpu", "0", 0), device_env("tpu", "1", 1)
    assert tpu1["TPU_VISIBLE_CHIPS"] == "1"
    assert tpu1["TPU_CHIPS_PER_PROCESS_BOUNDS"] == "1,1,1" == tpu1["TPU_PROCESS_BOUNDS"]
    ports = {tpu0["TPU_PROCESS_PORT"], tpu1["TPU_PROCESS_PORT"],
             tpu0["JAX_COORDINATOR_ADDRESS"].split(":")[1],
             tpu1["JAX_COORDINATOR_ADDRESS"].split(":")[1]}
    assert len(ports) == 4
    with pytest.raises(LaunchError, match="unknown platform"):
        device_env("quantum", "0", 0)
