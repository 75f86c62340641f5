"""Self-checks for the exercises: run a learner's function against course_lib's on several cases.

A check prints one friendly line when every case passes and raises :class:`ExerciseFailure` with
the failing case, what was expected and what came back otherwise. It never shows the reference code.
Chapter modules (``course_lib.exercises.ch01`` ...) define the cases of each exercise.

Feedback is for learners: the hint comes only after a real failure (not on the untouched stub); warnings
the learner's code raises are reported on stdout, not stderr (nbgrader scores a cell that writes to stderr
zero); and in IPython an ExerciseFailure is shown as its message alone, without a traceback through the
checker's source (:func:`show_failures_without_traceback`, run when this package is imported).
"""

from __future__ import annotations

import dis
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class ExerciseFailure(AssertionError):
    """An exercise's self-check did not pass; the message says which case and why."""


@dataclass
class Case:
    """One input to try: positional ``args``, keyword ``kwargs`` and a short human ``label``."""

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def _summary(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        body = np.array2string(x.detach().cpu().numpy(), precision=4, threshold=12, edgeitems=2)
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}: {body}"
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape}: {np.array2string(x, precision=4, threshold=12, edgeitems=2)}"
    text = repr(x)
    return text if len(text) < 300 else text[:300] + "..."


def _compare(expected: Any, got: Any, atol: float, rtol: float) -> str | None:
    """None when equal within tolerance, else the reason they differ."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a sequence of {len(expected)} items"
        for i, (e, g) in enumerate(zip(expected, got)):
            why = _compare(e, g, atol, rtol)
            if why:
                return f"item {i}: {why}"
        return None
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        e = torch.as_tensor(np.asarray(expected)) if isinstance(expected, np.ndarray) else expected
        try:
            g = torch.as_tensor(got.detach() if isinstance(got, torch.Tensor) else np.asarray(got))
        except (TypeError, ValueError, RuntimeError):
            return f"expected a tensor, got {type(got).__name__}"
        if tuple(g.shape) != tuple(e.shape):
            return f"shape {tuple(g.shape)} instead of {tuple(e.shape)}"
        if e.dtype == torch.bool or g.dtype == torch.bool:
            return None if torch.equal(e.bool(), g.bool()) else "some entries differ"
        e, g = e.detach().double().cpu(), g.double().cpu()
        if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
            worst = (g - e).abs().nan_to_num(float("inf")).max().item()
            return f"values differ (largest difference {worst:.3g}, allowed {atol:g} + {rtol:g} x |expected|)"
        return None
    if isinstance(expected, float):
        try:
            value = float(got)
        except (TypeError, ValueError):
            return f"expected a number, got {type(got).__name__} (did the function forget to return?)"
        return None if abs(value - expected) <= atol + rtol * abs(expected) else "the numbers differ"
    return None if got == expected else "the values differ"


def not_written_yet(name: str) -> ExerciseFailure:
    """The failure for an exercise whose stub still raises NotImplementedError (no hint: nothing failed)."""
    return ExerciseFailure(
        f"{name} is not written yet: replace `raise NotImplementedError()` with your code, "
        "then run this check again."
    )


def check_function(
    name: str,
    learner: Callable,
    reference: Callable,
    cases: Sequence[Case],
    atol: float = 1e-5,
    rtol: float = 1e-4,
    hint: str = "",
) -> None:
    """Run ``learner`` and ``reference`` on every case; print a success line or raise ExerciseFailure."""
    for i, case in enumerate(cases, start=1):
        where = f"{name}, case {i} of {len(cases)} ({case.label})"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = learner(*_clone(case.args), **_clone(case.kwargs))
        except NotImplementedError:
            raise not_written_yet(name) from None
        except Exception as err:  # the learner's code raised: show it as feedback, not a crash
            raise ExerciseFailure(f"{where}: your function raised {type(err).__name__}: {err}") from None
        for w in caught:  # on stdout, as feedback: a warning on stderr would cost the answer its points
            print(f"note: {where}: your code warned ({w.category.__name__}: {w.message})")
        expected = reference(*_clone(case.args), **_clone(case.kwargs))
        why = _compare(expected, got, atol, rtol)
        if why:
            raise ExerciseFailure(
                f"{where}: {why}.\n  expected: {_summary(expected)}\n  got:      {_summary(got)}"
                + (f"\n  hint: {hint}" if hint else "")
            )
    print(f"✓ {name}: all {len(cases)} cases pass")


def _is_library(obj: Any) -> bool:
    """True for a course_lib module, function or class (the exercises package itself excluded)."""
    name = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
    if not isinstance(name, str) or not (inspect.ismodule(obj) or callable(obj)):
        return False
    return (name == "course_lib" or name.startswith("course_lib.")) and not name.startswith(
        "course_lib.exercises"
    )


def _code_names(code: Any) -> set[str]:
    """Every global or attribute name a code object uses, nested functions and comprehensions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


def _attribute_names(code: Any) -> set[str]:
    """The names a code object reads as attributes (``F.gelu`` -> ``gelu``) or imports from a module
    (``from torch.nn.functional import gelu`` inside it), nested code included."""
    reads = ("LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM")
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in reads}
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _attribute_names(const)
    return names


def _module_of(value: Any) -> str:
    """The module an object comes from (a module's own name for a module), or "" when unknown."""
    return str((value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)) or "")


def _in_torch(name: str) -> bool:
    return any(hasattr(space, name) for space in (torch, torch.nn.functional, torch.Tensor))


def library_used(
    answer: Any, allowed: Sequence[str] = (), forbidden: Sequence[str] = (), packages: Sequence[str] = ()
) -> list[str]:
    """What a ready-made answer an answer is or reaches: ``[]`` when it is written by hand.

    Looks at the answer itself (a course_lib function or class, or a subclass of one), then at every
    global its code names (functions and classes the learner wrote are followed, so a wrapper around a
    wrapper is found too). Reports, by name:

    - course_lib objects (``course_lib.tokenizers.BPETokenizer``), except those named in ``allowed``
      (e.g. ``GPTConfig``);
    - functions named in ``forbidden`` (PyTorch's ``layer_norm``, scikit-learn's ``confusion_matrix``),
      read as an attribute (``F.layer_norm``) or imported (a helper of the learner's own with the same
      name is spared), as ``"layer_norm"`` or ``"confusion_matrix from sklearn.metrics"``;
    - anything from the third-party ``packages`` (e.g. ``("sklearn",)``): ``"f1_score from
      sklearn.metrics"``, or ``"code from sklearn.metrics"`` imported inside the function.
    """
    found: list[str] = []
    seen: set[int] = set()
    home = _module_of(answer)  # where the learner's code lives (``__main__`` in a notebook)

    def from_package(module: str) -> bool:
        return module.split(".")[0] in packages

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = _module_of(obj)
        if module != home and not _is_library(obj) and callable(obj):  # reached through a closure
            if getattr(obj, "__name__", "") in forbidden or from_package(module):
                found.append(f"{obj.__name__} from {module or 'a library'}")
                return
        if inspect.isclass(obj):
            for base in obj.__mro__:
                if _is_library(base) and base.__name__ not in allowed:
                    found.append(f"{base.__module__}.{base.__name__}")
                elif from_package(base.__module__):
                    found.append(f"{base.__name__} from {base.__module__}")
                elif base.__module__.split(".")[0] not in ("builtins", "torch", "typing", "abc"):
                    for member in vars(base).values():
                        func = member.fget if isinstance(member, property) else member
                        func = getattr(func, "__func__", func)  # staticmethod / classmethod
                        if inspect.isfunction(func):
                            visit(func)
            return
        if _is_library(obj):
            if getattr(obj, "__name__", "") not in allowed:
                found.append(
                    obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"
                )
            return
        if inspect.isfunction(obj):
            attributes = _attribute_names(obj.__code__)
            for name in sorted(_code_names(obj.__code__)):
                value = obj.__globals__.get(name)
                module = _module_of(value) if name in obj.__globals__ else ""
                if name.split(".")[0] == "course_lib" and not name.startswith("course_lib.exercises"):
                    found.append(name)  # an import inside the function
                elif from_package(name):
                    found.append(f"code from {name}")  # `from sklearn.metrics import f1_score` inside
                elif name in forbidden and name in attributes:
                    found.append(f"PyTorch's {name}" if _in_torch(name) else name)  # F.gelu, x.softmax()
                elif name in forbidden and name in obj.__globals__ and module != obj.__module__:
                    found.append(f"{name} from {module or 'a library'}")
                elif name in obj.__globals__ and from_package(module) and not _is_library(value):
                    found.append(f"{name} from {module}")
                elif name in obj.__globals__:
                    if _is_library(value) or inspect.isfunction(value) or inspect.isclass(value):
                        visit(value)
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass

    visit(answer)
    return sorted(set(found), key=lambda item: (not item.startswith("course_lib"), item))


def require_own_code(
    answer: Any,
    what: str,
    allowed: Sequence[str] = (),
    forbidden: Sequence[str] = (),
    packages: Sequence[str] = (),
) -> None:
    """Raise :class:`ExerciseFailure` when ``answer`` is, or calls, a ready-made version of ``what``: the
    library's own, a ``forbidden`` function, or anything from ``packages`` (see :func:`library_used`)."""
    used = library_used(answer, allowed, forbidden, packages)
    if used:
        raise ExerciseFailure(
            f"{what}: your answer uses the library ({', '.join(used)}), which computes it for you; the "
            "exercise is to write it yourself, from the formula, with plain Python, NumPy and PyTorch "
            "tensor operations"
        )


def _clone(x: Any) -> Any:
    """Fresh copies of tensor inputs, so a learner's in-place edit cannot change the reference's input."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    if isinstance(x, list):
        return [_clone(v) for v in x]
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def show_failures_without_traceback() -> bool:
    """In IPython, show an :class:`ExerciseFailure` as ``ExerciseFailure: <message>`` only.

    The failing cell still fails (nbgrader scores it zero, "Run all" stops there); only the traceback
    through the checker's source and the machine's paths is left out. Returns False outside IPython.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False

    def show(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
        stb = [f"{etype.__name__}: {value}"]
        shell._showtraceback(etype, value, stb)  # the kernel's error message, with this text as traceback
        return stb

    shell.set_custom_exc((ExerciseFailure,), show)
    return True


show_failures_without_traceback()

__all__ = [
    "Case",
    "ExerciseFailure",
    "check_function",
    "library_used",
    "not_written_yet",
    "require_own_code",
    "show_failures_without_traceback",
]
