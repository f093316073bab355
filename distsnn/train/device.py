"""Which device a rank trains on (``run.device``), and why CUDA is missing when a GPU was asked for.

``auto`` keeps the laptop demo working (``deepspeed --num_gpus 2`` on a CPU machine runs 2 gloo ranks, so the
launcher's flag cannot be the signal); ``cuda`` (the cluster recipes and the Kubernetes run config) turns a
missing GPU into exit 78 with the cause, instead of a silent fp32 CPU run on gloo.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

# Oldest Linux driver per CUDA major version of the torch wheel (NVIDIA's CUDA toolkit release notes, table 3).
MIN_DRIVER = {"12": "525.60.13", "13": "580.65.06"}


class DeviceError(RuntimeError):
    """``run.device: cuda`` but this process cannot use a GPU; the message names the cause."""


def driver_cuda_version() -> str | None:
    """The CUDA version the installed NVIDIA driver supports ("12.4"), or None when no driver is visible."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    v = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(v)) != 0 or v.value <= 0:
        return None
    return f"{v.value // 1000}.{v.value % 1000 // 10}"


def kernel_driver_version() -> str | None:
    """The NVIDIA kernel module's version ("550.54.15") from /proc, or None."""
    path = Path("/proc/driver/nvidia/version")
    if not path.is_file():
        return None
    for word in path.read_text().split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


def cuda_unavailable_reason(wheel_cuda: str | None, driver_cuda: str | None, kernel_driver: str | None,
                            visible: str | None) -> str:
    """Why ``torch.cuda.is_available()`` is False, from what can be read without CUDA."""
    if wheel_cuda is None:
        return "this torch build has no CUDA support (a CPU-only wheel); install the CUDA wheel from requirements.lock"
    need = MIN_DRIVER.get(wheel_cuda.split(".")[0])
    need_txt = f" (driver >= {need})" if need else ""
    if visible is not None and visible.strip() in ("", "-1", "none", "void"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU from this process"
    if driver_cuda is None:
        return (f"no NVIDIA driver is visible (libcuda.so.1 not found); this torch wheel needs CUDA {wheel_cuda}"
                f"{need_txt}. In Kubernetes: request nvidia.com/gpu and use the NVIDIA container runtime")
    major = lambda v: tuple(int(x) for x in v.split(".")[:2])  # noqa: E731
    if major(driver_cuda) < major(wheel_cuda):
        drv = f"driver {kernel_driver}" if kernel_driver else "the driver"
        return (f"{drv} supports CUDA {driver_cuda} but this torch wheel is built for CUDA {wheel_cuda}{need_txt}: "
                "upgrade the node's NVIDIA driver (or schedule onto nodes that have one)")
    return (f"the driver supports CUDA {driver_cuda} (wheel: CUDA {wheel_cuda}) but torch sees no usable GPU: "
            "check nvidia-smi on the node and the pod's nvidia.com/gpu request")


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``run.device`` -> this rank's device; raises ``DeviceError`` when ``cuda`` is asked for and unavailable."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"run.device: local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) "
                              "are visible (launcher --num_gpus larger than the GPUs of this node)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if requested == "cuda":
        reason = cuda_unavailable_reason(torch.version.cuda, driver_cuda_version(), kernel_driver_version(),
                                         os.environ.get("CUDA_VISIBLE_DEVICES"))
        raise DeviceError(f"run.device: cuda, but torch.cuda.is_available() is False: {reason}")
    return torch.device("cpu")
