"""GPU memory and utilisation per worker, read from NVML (`nvidia-ml-py`, optional: the `gpu`
extra). Without it, or without a GPU, these metrics are simply absent."""

from __future__ import annotations

import contextlib
from typing import Any


class GpuUsage:
    """Reads NVML: each worker process's GPU memory, and its GPU's utilisation.

    Worker slots name physical GPUs (`CUDA_VISIBLE_DEVICES`), and NVML counts them in PCI
    order: the two agree where `CUDA_DEVICE_ORDER=PCI_BUS_ID` (the usual server setting)."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    @classmethod
    def open(cls) -> GpuUsage | None:
        """NVML, initialised; None where the package or a driver is missing."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:
            return None
        return cls(pynvml)

    def memory_bytes(self, gpu_id: int, pid: int) -> float | None:
        """The GPU memory process `pid` holds on GPU `gpu_id` (None: none, or unknown)."""
        with contextlib.suppress(Exception):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(gpu_id)
            for process in self.nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == pid and process.usedGpuMemory is not None:
                    return float(process.usedGpuMemory)
        return None

    def utilization(self, gpu_id: int) -> float | None:
        """The share of the last sample period in which GPU `gpu_id` ran a kernel (0..1)."""
        with contextlib.suppress(Exception):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(gpu_id)
            return float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu) / 100.0
        return None
