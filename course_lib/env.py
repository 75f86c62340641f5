"""Where the course runs: device choice (and moving batches there), seeding, fast mode, the cache directory.

Every chapter starts with these four helpers, so a notebook behaves the same on a
laptop CPU, an Apple GPU, a CUDA GPU and in CI.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

FAST_ENV = "COURSE_FAST"
CACHE_ENV = "COURSE_CACHE"
DEVICE_ENV = "COURSE_DEVICE"

T = TypeVar("T")


def fast_mode() -> bool:
    """True when ``COURSE_FAST`` is set to 1/true/yes (CI uses this; learners do not)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(fast: T, full: T) -> T:
    """Return ``fast`` in fast mode, ``full`` in learner mode: the same code path, smaller numbers."""
    return fast if fast_mode() else full


@dataclass(frozen=True)
class DeviceChoice:
    """A device together with the reason it was chosen."""

    device: torch.device
    reason: str

    def __str__(self) -> str:
        return f"{self.device} ({self.reason})"


def choose_device(prefer: str | None = None) -> DeviceChoice:
    """Choose CUDA, then Apple MPS, then CPU, and say why.

    ``prefer`` (or the ``COURSE_DEVICE`` variable) forces a device such as ``"cpu"`` or ``"cuda:1"``;
    an unavailable choice raises with the fix instead of failing later inside a kernel.
    """
    prefer = prefer or os.environ.get(DEVICE_ENV) or None
    if prefer:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {prefer!r} was asked for but this torch build sees no CUDA GPU; "
                f"unset {DEVICE_ENV} or pass prefer='cpu'"
            )
        if dev.type == "mps" and not _mps_available():
            raise RuntimeError(
                f"device {prefer!r} was asked for but MPS is not available here; "
                f"unset {DEVICE_ENV} or pass prefer='cpu'"
            )
        return DeviceChoice(dev, "asked for explicitly")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return DeviceChoice(torch.device("cuda"), f"CUDA GPU found: {name}")
    if _mps_available():
        return DeviceChoice(torch.device("mps"), "Apple GPU (MPS) found")
    return DeviceChoice(torch.device("cpu"), "no CUDA or MPS device found; using the CPU")


def get_device(prefer: str | None = None) -> torch.device:
    """The device :func:`choose_device` picks."""
    return choose_device(prefer).device


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in a (nested) tuple/list/dict batch to ``device``; ``non_blocking`` copies from
    page-locked host memory so the copy overlaps with GPU work."""
    if isinstance(batch, torch.Tensor):
        if non_blocking and device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()  # page-locked memory lets the copy overlap with GPU work
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available() and backend.is_built())


def seed_everything(seed: int = 1337) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def cache_root() -> Path:
    """The cache folder: ``COURSE_CACHE`` or ``~/.cache/course_lib`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "course_lib").expanduser()


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a reader should see it: ``<cache>/...`` inside the cache, relative to the working
    folder inside it, else unchanged -- so printed outputs never show this machine's home folder."""
    path = Path(path).expanduser().resolve()
    for root, label in ((cache_root(), "<cache>"), (Path.cwd(), ".")):
        if path.is_relative_to(root.resolve()):
            return Path(label, path.relative_to(root.resolve())).as_posix()
    return str(path)


def cache_dir(*parts: str) -> Path:
    """The directory for artefacts (checkpoints, tokenizers, token caches), created on demand.

    Defaults to ``~/.cache/course_lib`` so nothing large lands in the repository;
    ``COURSE_CACHE`` overrides it. Extra ``parts`` name a subdirectory.
    """
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
