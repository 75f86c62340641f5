"""Checkpoints that survive crashes: atomic writes, checksums, safe loading, clear errors, RNG state.

A checkpoint is a plain dict saved with ``torch.save``. It holds only tensors and Python builtins
(numbers, strings, tuples, lists, dicts), so it loads with ``weights_only=True``: opening one never
runs code from the file. A SHA-256 of its contents is stored in it and checked on load, so a flipped
bit is an error rather than a silently different model. :class:`RunDirLock` keeps two runs from
writing one folder, and :func:`check_out_dir` finds an unwritable or full disk before training starts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or that does not fit the model it is loaded into."""


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over every entry of ``state`` except ``"checksum"``: tensor bytes, dtypes, shapes, values."""
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != "checksum"}, h)
    return h.hexdigest()


def _digest(obj: Any, h: Any) -> None:
    """Feed ``obj`` into the hash ``h`` in a fixed order (dict keys sorted), tagging each kind of value."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _digest(k, h)
            _digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _digest(v, h)
    else:  # numbers, strings, None, torch.Size ...
        h.update(f"V{type(obj).__name__}:{obj!r};".encode())


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is just not ours
        return True
    return True


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files that a killed :func:`save_checkpoint` left behind (PID gone)."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def kept_path(path: str | Path, i: int) -> Path:
    """The ``i``-th older copy of ``path`` that :func:`save_checkpoint` keeps: last.pt -> last.1.pt, ..."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{i}{path.suffix}")


def _rotate(path: Path, keep: int) -> None:
    """Shift last.pt -> last.1.pt -> last.2.pt ... so ``keep`` files remain; ``path`` stays in place."""
    if keep < 2 or not path.is_file():
        return
    for i in range(keep - 1, 1, -1):
        if kept_path(path, i - 1).is_file():
            os.replace(kept_path(path, i - 1), kept_path(path, i))
    link = path.with_name(f".{path.name}.tmp-prev-{os.getpid()}")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)  # a second name for the same bytes: path is never missing, not even for a moment
    except OSError:  # file systems without hard links
        shutil.copyfile(path, link)
    os.replace(link, kept_path(path, 1))


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind ``err`` (torch.save reports a failed write as "unexpected pos ..." on top of it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def save_checkpoint(state: Mapping[str, Any], path: str | Path, keep: int = 1) -> Path:
    """Write ``state`` to ``path`` atomically: readers see the old file or the new one, never half of one.

    The bytes go to a temporary file in the same directory (same file system, so the rename is atomic),
    are flushed to disk, and only then replace ``path`` with ``os.replace``. A ``"checksum"`` entry
    (:func:`state_checksum`) is added for :func:`load_checkpoint` to verify. ``keep=2`` keeps the
    previous file as ``last.1.pt`` (``keep=N``: N files in all). Temporary files of writers that were
    killed (SIGKILL, power loss) are deleted first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    state = {k: v for k, v in state.items() if k != "checksum"}
    state["checksum"] = state_checksum(state)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _rotate(path, keep)
        os.replace(tmp, path)
    except Exception as e:
        os_error = _os_error_in(e)
        if os_error is None or os_error is e:
            raise
        free = shutil.disk_usage(path.parent).free
        raise OSError(
            os_error.errno,
            f"{os_error.strerror or os_error} while writing {path} ({free / 2**20:,.0f} MiB free there); "
            "the previous checkpoint is untouched. Free some space or choose another out_dir, then resume",
        ) from e
    finally:
        if tmp.exists():  # only when something above failed
            tmp.unlink()
    return path


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; unreadable files and files holding code: CheckpointError."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, random bytes, pickled code ...: all "unreadable"
        first_line = str(e).splitlines()[0] if str(e) else ""
        others = [p.name for p in sorted(path.parent.glob("*.pt")) if p.name != path.name]
        instead = f"resume from another one ({', '.join(others)})" if others else "use another copy"
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {first_line[:200]}); "
            f"the file is corrupt, cut short or holds more than tensors. Delete it and {instead}, "
            "or start training afresh"
        ) from e


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and verify its checksum; a bad file gives an
    error saying what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; check the path (training writes last.pt and best.pt in "
            "TrainConfig.out_dir) or start without resuming"
        )
    state = load_tensors(path, map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(
            f"{path} loads but is not a course_lib checkpoint (no 'model' entry); "
            "pass a file written by Trainer or save_checkpoint"
        )
    if "checksum" in state and state_checksum(state) != state["checksum"]:
        older = [p.name for p in (kept_path(path, i) for i in (1, 2, 3)) if p.is_file()]
        instead = f"resume from {older[0]} (the previous checkpoint)" if older else "start training afresh"
        raise CheckpointError(
            f"{path} fails its checksum: its contents changed after it was written (disk or copy error). "
            f"Do not use it: {instead}"
        )
    return state


# ----------------------------------------------------------------------------------------------------
# the output folder: one run at a time, writable, room for a checkpoint


def check_out_dir(out_dir: str | Path, need_bytes: int) -> Path:
    """Create ``out_dir`` and make sure a checkpoint of ``need_bytes`` can be written there, before training.

    Writes (and deletes) a probe file, deletes stale temporary files, and compares the free space with
    ``need_bytes``; raises :class:`OSError` naming the folder and the fix otherwise.
    """
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        remove_stale_temp_files(out_dir)  # the space they take counts as free
    except OSError as e:
        raise OSError(
            e.errno,
            f"cannot write checkpoints to out_dir {out_dir} ({e.strerror or e}); set train.out_dir "
            "(TrainConfig.out_dir) to a writable folder",
        ) from e
    free = shutil.disk_usage(out_dir).free
    if free < need_bytes:
        raise OSError(
            errno.ENOSPC,
            f"out_dir {out_dir} has {free / 2**20:,.1f} MiB free but one checkpoint needs about "
            f"{need_bytes / 2**20:,.1f} MiB; free some space or set train.out_dir to another disk",
        )
    return out_dir


class RunDirLock:
    """An ``out_dir/.lock`` file naming the process that trains there; a second run is refused.

    A lock left by a process that no longer runs (SIGKILL, a crash, a closed notebook) is stale and
    is taken over. ``with RunDirLock(out_dir): ...`` or ``acquire()`` / ``release()``.
    """

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / ".lock"
        self.held = False

    def _owner(self) -> tuple[str, int] | None:
        try:
            host, pid, *_ = self.path.read_text(encoding="utf-8").split()
            return host, int(pid)
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunDirLock:
        me = f"{socket.gethostname()} {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner == (socket.gethostname(), os.getpid()):
                    self.held = True  # this process already holds it
                    return self
                if owner is not None and owner[0] == socket.gethostname() and _pid_alive(owner[1]):
                    raise CheckpointError(
                        f"{self.path.parent} is in use by another training run (process {owner[1]}); two "
                        "runs writing one out_dir overwrite each other's checkpoints. Wait for it to end, "
                        "stop it, or give this run another out_dir"
                    ) from None
                if owner is not None and owner[0] != socket.gethostname():
                    raise CheckpointError(
                        f"{self.path.parent} is locked by process {owner[1]} on {owner[0]}; if no run is "
                        f"using it any more, delete {self.path}, or give this run another out_dir"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone (or the file is garbage)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(me)
            self.held = True
            return self
        raise CheckpointError(f"could not take the lock {self.path}; delete it if no run uses the folder")

    def release(self) -> None:
        if self.held and self._owner() == (socket.gethostname(), os.getpid()):
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


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
