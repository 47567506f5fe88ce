"""Worker slots from `devices:`; CUDA placement is planned without importing torch."""

from __future__ import annotations

import pytest

from servectl.spec import DevicesSpec
from servectl.worker.devices import DeviceError, WorkerSlot, plan_slots


def test_cpu_gets_workers_per_device() -> None:
    slots, note = plan_slots(DevicesSpec(accelerator="cpu", workers_per_device=3))
    assert [s.label for s in slots] == ["cpu"] * 3 and "cpu" in note
    assert slots[0].environment() == {"CUDA_VISIBLE_DEVICES": ""}


def test_auto_without_gpus_falls_back_to_cpu_and_says_why() -> None:
    slots, note = plan_slots(DevicesSpec(accelerator="auto"), gpu_count=0, why="no NVIDIA driver found")
    assert [s.device for s in slots] == ["cpu"] and "no NVIDIA driver found" in note


def test_cuda_slots_each_see_one_gpu() -> None:
    spec = DevicesSpec(accelerator="auto", ids=[1, 3], workers_per_device=2)
    slots, _ = plan_slots(spec, gpu_count=4)
    assert [s.gpu_id for s in slots] == [1, 1, 3, 3]
    assert [s.index for s in slots] == [0, 1, 2, 3]
    assert slots[2].environment() == {"CUDA_VISIBLE_DEVICES": "3"} and slots[2].device == "cuda:0"
    assert [s.gpu_id for s in plan_slots(DevicesSpec(accelerator="cuda", ids=2), gpu_count=4)[0]] == [0, 1]
    assert len(plan_slots(DevicesSpec(accelerator="cuda"), gpu_count=2)[0]) == 2


@pytest.mark.parametrize(
    ("spec", "gpus", "match"),
    [
        (DevicesSpec(accelerator="cuda"), 0, "no GPU is usable"),
        (DevicesSpec(accelerator="cuda", ids=3), 2, "asks for 3 GPUs"),
        (DevicesSpec(accelerator="cuda", ids=[0, 5]), 2, r"\[5\] not present"),
    ],
)
def test_impossible_placements_are_errors(spec: DevicesSpec, gpus: int, match: str) -> None:
    with pytest.raises(DeviceError, match=match):
        plan_slots(spec, gpu_count=gpus)


def test_slot_label() -> None:
    assert WorkerSlot(0, "cuda", 2).label == "cuda:2"


def test_gpu_usage_reads_a_workers_memory_and_its_gpus_utilisation_from_nvml() -> None:
    """The NVML calls (the GPU test runs them for real where a GPU is lent)."""
    from types import SimpleNamespace

    from servectl.runtime.gpu_usage import GpuUsage

    class FakeNvml:
        def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
            if index > 1:
                raise RuntimeError("NVML_ERROR_INVALID_ARGUMENT")
            return index

        def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
            return [SimpleNamespace(pid=100 + handle, usedGpuMemory=2**30 * (handle + 1))]

        def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
            return SimpleNamespace(gpu=37 + handle)

    gpu = GpuUsage(FakeNvml())
    assert gpu.memory_bytes(1, 101) == 2 * 2**30 and gpu.memory_bytes(1, 100) is None
    assert gpu.utilization(0) == 0.37 and gpu.utilization(5) is None and gpu.memory_bytes(5, 1) is None
