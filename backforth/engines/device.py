"""Where an in-process model runs and in which dtype: one rule for the engines and for training.

`device`: `auto` takes the GPU when torch sees one, else the CPU; `cuda` (or `cuda:N`) insists on
a GPU and says so plainly when there is none; `cpu` stays on the CPU. `dtype`: `auto` is bfloat16
on a GPU that has it (float16 on one that does not) and on a CPU with native bf16 matmuls
(AVX512-BF16 or AMX), float32 elsewhere, where emulated bf16 is slower than float32.
"""

from __future__ import annotations

from .base import EngineError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(setting: str = "auto", cuda_available: bool | None = None) -> str:
    """The torch device string for a `device` setting (`auto`, `cpu`, `cuda`, `cuda:N`)."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if setting == "auto":
        return "cuda" if cuda_available else "cpu"
    if setting == "cpu":
        return "cpu"
    if setting == "cuda" or setting.startswith("cuda:"):
        if not cuda_available:
            raise EngineError(f"device '{setting}': torch sees no CUDA GPU here (torch.cuda.is_available() is False). "
                              "Use device: auto or cpu, or install a CUDA build of torch on a GPU machine.")
        return setting
    raise EngineError(f"device '{setting}': expected auto, cpu, cuda or cuda:N")


def pick_dtype(name: str = "auto", device: str = "cpu"):
    """The torch dtype for a `dtype` setting on `device`."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cpu_has_native_bf16() -> bool:
    import torch

    native = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return bool(native) and (_cpu_flag("avx512_bf16") or _cpu_flag("amx_bf16"))


def _cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return any(flag in line.split() for line in fh if line.startswith("flags"))
    except OSError:
        return False
