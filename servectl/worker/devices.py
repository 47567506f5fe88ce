"""Turning `devices:` into worker slots: one inference worker process per slot.

GPU detection must not import torch into the API process, so it looks for the NVIDIA
driver first and only then asks torch in a short-lived subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from servectl.spec import DevicesSpec


class DeviceError(Exception):
    """The devices a spec asks for are not on this machine."""


@dataclass(frozen=True)
class WorkerSlot:
    """Where one worker runs: its index, and the GPU it alone sees (if any)."""

    index: int
    accelerator: str  # "cpu" | "cuda"
    gpu_id: int | None = None

    @property
    def device(self) -> str:
        """The device as the worker's handler sees it (its one GPU is always cuda:0)."""
        return "cuda:0" if self.accelerator == "cuda" else "cpu"

    @property
    def label(self) -> str:
        return f"cuda:{self.gpu_id}" if self.accelerator == "cuda" else "cpu"

    def environment(self) -> dict[str, str]:
        """Variables the worker sets before importing anything heavy."""
        if self.accelerator == "cuda":
            return {"CUDA_VISIBLE_DEVICES": str(self.gpu_id)}
        return {"CUDA_VISIBLE_DEVICES": ""}


_PROBE = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


def count_gpus() -> tuple[int, str]:
    """How many CUDA GPUs torch would see here, and why when none."""
    if not Path("/proc/driver/nvidia").exists() and not os.environ.get("SERVECTL_PROBE_GPUS"):
        return 0, "no NVIDIA driver found"
    if importlib.util.find_spec("torch") is None:
        return 0, "torch is not installed"
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
        n = int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as exc:
        return 0, f"torch could not query CUDA ({type(exc).__name__})"
    return n, "" if n else "torch reports no CUDA device"


def plan_slots(devices: DevicesSpec, gpu_count: int | None = None, why: str = "") -> tuple[list[WorkerSlot], str]:
    """The worker slots for a devices section, and a sentence on how they were chosen."""
    if devices.accelerator != "cpu" and gpu_count is None:
        gpu_count, why = count_gpus()
    gpus = gpu_count or 0
    per = devices.workers_per_device
    if devices.accelerator == "cpu" or (devices.accelerator == "auto" and gpus == 0):
        note = "cpu (asked for)" if devices.accelerator == "cpu" else f"cpu (auto: {why or 'no GPU'})"
        return [WorkerSlot(i, "cpu") for i in range(per)], note
    if gpus == 0:
        raise DeviceError(f"devices.accelerator is 'cuda' but no GPU is usable: {why}")
    if devices.ids == "auto":
        ids = list(range(gpus))
    elif isinstance(devices.ids, int):
        if devices.ids > gpus:
            raise DeviceError(f"devices.ids asks for {devices.ids} GPUs; {gpus} visible")
        ids = list(range(devices.ids))
    else:
        bad = [i for i in devices.ids if i >= gpus]
        if bad:
            raise DeviceError(f"devices.ids {bad} not present: GPUs 0..{gpus - 1} visible")
        ids = list(devices.ids)
    slots = [WorkerSlot(n, "cuda", g) for n, g in enumerate(g for g in ids for _ in range(per))]
    return slots, f"cuda {ids}"
