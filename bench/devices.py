"""Which torch device a command runs on: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from bench.errors import DeviceError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda when a GPU is available, else cpu; a named device must exist here."""
    spec = str(spec).strip().lower()
    if not _DEVICE.match(spec):
        raise DeviceError(f"unknown device {spec!r}; use cpu, cuda, cuda:N or auto")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but no CUDA GPU is available; use cpu")
        index = torch.device(spec).index
        if index is not None and index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} "
                f"GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return torch.device(spec)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a network's parameters (CPU for a network without any)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def native_bfloat16(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that does (Ampere or later),
    or a CPU with AVX512-BF16 or AMX (read off ``cpuinfo``); None where that cannot be told (a
    CPU off Linux, another kind of device). Without it bfloat16 is emulated, slower than
    float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return None
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return None
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
