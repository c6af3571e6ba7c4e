"""Checkpoints of a training run: safe to load, written atomically.

``RUN_DIR/checkpoints/`` holds ``init.pt`` (the untrained initial weights, saved
before the first step: the untrained control of the analysis), ``last.pt`` (after
every epoch) and optionally ``epoch-XXX.pt``. Each is a dict of plain types and
tensors only::

    {"format": "synthcount-vae-checkpoint", "format_version": 1,
     "model": state_dict, "optimizer": state_dict, "scheduler": state_dict,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]},
     "epoch": int (completed epochs), "config": {"model": {...}, "train": {...}},
     "best_test_loss": float}

so ``torch.load(path, weights_only=True)`` reads it; nothing here ever unpickles
arbitrary objects, so a crafted file cannot run code. Files are written to a
temporary name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple, Union

import torch

from synthcount._io import atomic_write

from .config import ModelConfig
from .model import VAE

__all__ = ["FORMAT", "checkpoint_path", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "load_model"]

FORMAT = "synthcount-vae-checkpoint"
FORMAT_VERSION = 1


def checkpoint_path(run_dir: str, which: Union[str, int] = "last") -> str:
    """Path of ``"last"``, ``"init"`` or epoch ``k`` (``epoch-XXX.pt``) in a run."""
    d = os.path.join(run_dir, "checkpoints")
    if which in ("last", "init", "interrupted"):
        return os.path.join(d, f"{which}.pt")
    if isinstance(which, bool) or not isinstance(which, int) or which < 0:
        raise ValueError(f"which must be 'last', 'init' or a non-negative epoch, got {which!r}")
    return os.path.join(d, f"epoch-{which:03d}.pt")


def rng_state() -> Dict[str, Any]:
    """Torch's CPU and CUDA generator states as tensors (weights_only-loadable)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda)}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` (plain types and tensors) to ``path`` atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    # The project's one rule for files (synthcount._io): fsynced before the rename, so a
    # power cut leaves the old checkpoint or the new one; a full disk is a WriteError
    # naming the file, and the old checkpoint stays.
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises
    ------
    ValueError
        The file is missing, not a checkpoint, or holds anything but plain types
        and tensors (such a file is refused, never executed).
    """
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError and friends: refuse, with the reason
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: refused to load (not a safe weights-only checkpoint): {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a synthcount VAE checkpoint")
    return state


def load_model(run_dir: str, which: Union[str, int] = "last",
               map_location: Any = "cpu") -> Tuple[VAE, ModelConfig, Dict[str, Any]]:
    """Load a trained (or the initial, untrained) VAE from a run directory.

    Parameters
    ----------
    run_dir : str
        A run directory (``RUN_DIR/checkpoints/...``) or a checkpoint file.
    which : "last", "init" or int
        ``"init"`` = the weights before the first step (untrained control);
        an int = ``epoch-XXX.pt`` (or ``last.pt`` if that is the epoch asked for).
    map_location : torch map_location

    Returns
    -------
    model : VAE in eval mode
    cfg : ModelConfig
    meta : dict
        ``epoch``, ``path``, ``which``, ``train_config`` (dict) and ``metadata``
        (the run's metadata.json, or {}).
    """
    if os.path.isfile(run_dir):
        path = run_dir
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    else:
        if not os.path.isdir(run_dir):
            raise ValueError(f"run_dir must be a run directory or a checkpoint file, got {run_dir!r} (not found)")
        path = checkpoint_path(run_dir, which)
        if isinstance(which, int) and not os.path.isfile(path):
            last = checkpoint_path(run_dir, "last")
            if os.path.isfile(last) and load_checkpoint(last, map_location).get("epoch") == which:
                path = last
    state = load_checkpoint(path, map_location)
    cfg = ModelConfig.from_dict(state["config"]["model"])
    model = VAE(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    meta_path = os.path.join(run_dir, "metadata.json")
    metadata = {}
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            metadata = json.load(f)
    meta = {"epoch": int(state.get("epoch", 0)), "path": os.path.abspath(path), "which": which,
            "train_config": state["config"].get("train", {}), "metadata": metadata}
    return model, cfg, meta
