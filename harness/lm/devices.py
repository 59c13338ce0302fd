"""Where a run's model runs: the spec's ``model.device`` resolved once per run to one torch device.

``auto`` is ``cuda:0`` when torch sees a CUDA device, else ``cpu``; ``cpu``, ``cuda`` (``cuda:0``)
and ``cuda:N`` name one. A CUDA device that torch does not see is an :class:`InputError`, raised
when a check or a run starts, never a silent fall back to the CPU. ``cpu`` imports no torch.
"""

from __future__ import annotations

from dvbench.harness.errors import InputError

DEVICE = r"auto|cpu|cuda(:\d+)?"  # what model.device accepts


def resolve_device(setting: str) -> str:
    """The device ``setting`` names here: ``cpu`` or ``cuda:N``."""
    if setting == "cpu":
        return "cpu"
    import torch

    count = torch.cuda.device_count()
    if setting == "auto":
        return "cuda:0" if count else "cpu"
    index = int(setting.partition(":")[2] or 0)
    if not count:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise InputError(f"model.device is {setting!r} but torch sees no CUDA device: torch {torch.__version__} is "
                         f"{build}; run on a machine with a GPU and a CUDA build of torch, or set model.device: "
                         "cpu (or auto, the first GPU when there is one)")
    if index >= count:
        raise InputError(f"model.device is {setting!r} but torch sees {count} CUDA device(s), cuda:0 to "
                         f"cuda:{count - 1}; set model.device to one of them")
    return f"cuda:{index}"
