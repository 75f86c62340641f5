"""Checkpoints that survive crashes: atomic writes, safe loading, clear errors, RNG state.

A checkpoint is a plain dict saved with ``torch.save``. It holds only tensors and Python builtins
(numbers, strings, tuples, lists, dicts), so it loads with ``weights_only=True``: opening one never
runs code from the file.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or that does not fit the model it is loaded into."""


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: readers see the old file or the new one, never half of one.

    The bytes go to a temporary file in the same directory (same file system, so the rename is atomic),
    are flushed to disk, and only then replace ``path`` with ``os.replace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # only when something above failed
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a bad file gives an error saying what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; check the path (training writes last.pt and best.pt in "
            "TrainConfig.out_dir) or start without resuming"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, random bytes ...: all mean "unreadable"
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {first_line}); "
            "the file is corrupt or was cut short. Delete it and resume from another one (e.g. best.pt) "
            "or start training afresh"
        ) from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(
            f"{path} loads but is not a course_lib checkpoint (no 'model' entry); "
            "pass a file written by Trainer or save_checkpoint"
        )
    return state


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes that wrappers add to keys."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def format_keys(keys: Iterable[str], limit: int = 12) -> str:
    """State-dict keys for an error message: sorted, quoted, the first ``limit`` of them."""
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return "[" + shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "") + "]"


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> str | None:
    """What keeps ``given`` from loading where ``expected`` lives (missing, unexpected, mis-shaped
    keys, each listed), or None when it fits exactly. ``source`` names where ``given`` came from."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mis_shaped = [
        f"{k}: {source} {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(given))
        if tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {format_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {format_keys(unexpected)}")
    if mis_shaped:
        parts.append(f"shape mismatches [{'; '.join(mis_shaped[:8])}]")
    return ", ".join(parts) or None


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load weights into ``model``, or raise naming every missing, unexpected and mis-shaped key."""
    state = _strip_prefixes(state)
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(
            f"the checkpoint does not fit this model: {problem}. Build the model with the configuration "
            "the checkpoint was trained with (it is stored under checkpoint['meta'] when the CLI wrote it)"
        )
    model.load_state_dict(state)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random number generator a training step may draw from, in a ``weights_only``-safe form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # keys: the 624-word MT19937 state
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Put the generators back exactly where :func:`capture_rng_state` found them."""
    random.setstate(_as_python_state(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def _as_python_state(s: Any) -> tuple:
    """random.setstate wants tuples; a round trip through some serialisers turns them into lists."""
    version, internal, gauss = s
    return (version, tuple(internal), gauss)
