"""The one place that turns a device name into a ``torch.device``.

``resolve_device("auto")`` is CUDA when a GPU is visible, else the CPU. Training
(:mod:`vae.train`), encoding (:mod:`vae.encode`) and the CLI all call it, so
``--device`` means the same thing everywhere.
"""

from __future__ import annotations

__all__ = ["resolve_device", "DEVICE_NAMES"]

DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto"):
    """``"auto"`` -> CUDA if available else CPU; ``"cpu"``; ``"cuda"`` (an error without a GPU).

    Parameters
    ----------
    name : {"auto", "cpu", "cuda"}

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        An unknown name, or ``"cuda"`` on a machine without a CUDA GPU.
    """
    import torch

    if name not in DEVICE_NAMES:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
