"""Getting a trained model out of the notebook: a saved bundle, exported graphs, throughput, a CLI predictor.

Read top to bottom:

1. The bundle -- :func:`save_for_inference` writes a folder with ``model.pt`` (the state dict, loaded
   back with ``weights_only=True`` so opening it never runs code), ``config.json`` (which architecture,
   its arguments, the class labels) and optionally the tokenizer; :func:`load_for_inference` rebuilds
   the model from that config. Architectures are found by name in :data:`ARCHITECTURES`. Loading trusts
   nothing in the folder: members must lie inside it, the model is built on the ``meta`` device and
   compared with the weights before any memory is allocated, and NaN/inf weights are refused.
2. Exported graphs -- :func:`export_torch` (``torch.export``, a ``.pt2`` file that runs without the
   Python class) and :func:`export_onnx` (needs the optional ``onnx`` and ``onnxscript`` packages).
3. :func:`batched_throughput` -- items per second at several batch sizes.
4. :func:`print_predictions` -- what ``python -m course_lib predict MODEL_DIR "some text"`` runs (or
   image files, for an image model): labels + probabilities.

A ``.pt2`` file is different: ``torch.export.load`` unpickles parts of it with ``weights_only=False``,
so opening one can run code. :func:`load_exported` opens only files the caller marks ``trusted=True``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import pickle
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.env import get_device

BUNDLE_FORMAT = "course_lib.deploy/1"
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_LENGTH = 256  # tokens per text when the config does not say
MAX_KWARG_INT = 1 << 20  # no architecture size (width, layers, vocabulary, image side) in a bundle is larger

# ----------------------------------------------------------------------------------------------------
# 1. Architectures and the bundle


def _build_mlp(kw: dict[str, Any]) -> nn.Module:
    from course_lib.mlp_cnn import MLP

    return MLP(**kw)


def _build_digit_cnn(kw: dict[str, Any]) -> nn.Module:
    from course_lib.mlp_cnn import DigitCNN

    return DigitCNN(**kw)


def _build_gpt(kw: dict[str, Any]) -> nn.Module:
    from course_lib.gpt import GPT, GPTConfig

    return GPT(GPTConfig.from_dict(kw))


def _build_gpt_classifier(kw: dict[str, Any]) -> nn.Module:
    from course_lib.gpt import GPT, GPTConfig
    from course_lib.heads import GPTClassifier

    kw = dict(kw)
    return GPTClassifier(GPT(GPTConfig.from_dict(kw.pop("gpt"))), **kw)


def _build_encoder_classifier(kw: dict[str, Any]) -> nn.Module:
    from course_lib.encoder import Encoder, EncoderConfig
    from course_lib.heads import EncoderClassifier

    kw = dict(kw)
    return EncoderClassifier(Encoder(EncoderConfig(**kw.pop("encoder"))), **kw)


ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "MLP": _build_mlp,  # kwargs: sizes, activation, dropout
    "DigitCNN": _build_digit_cnn,  # kwargs: image_size, n_classes, channels, batchnorm, dropout
    "GPT": _build_gpt,  # kwargs: the GPTConfig fields
    "GPTClassifier": _build_gpt_classifier,  # kwargs: gpt (GPTConfig fields), n_classes, dropout
    "EncoderClassifier": _build_encoder_classifier,  # kwargs: encoder (EncoderConfig fields), n_classes
}
TEXT_ARCHITECTURES = ("GPTClassifier", "EncoderClassifier")  # take token ids, so they need a tokenizer


def register_architecture(name: str, builder: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Make ``config["architecture"] == name`` build a model with ``builder(config["kwargs"])``."""
    ARCHITECTURES[name] = builder


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The untrained model a bundle config describes: ``ARCHITECTURES[config["architecture"]](kwargs)``."""
    if "architecture" not in config:
        raise KeyError(
            'the config needs an "architecture" key naming the model, e.g. {"architecture": "MLP", '
            f'"kwargs": {{"sizes": [64, 128, 10]}}}}; known: {sorted(ARCHITECTURES)}'
        )
    name = config["architecture"]
    if name not in ARCHITECTURES:
        raise KeyError(
            f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}. Add yours with "
            "course_lib.deploy.register_architecture(name, builder)"
        )
    kwargs = dict(config.get("kwargs", {}))
    try:
        return ARCHITECTURES[name](kwargs)
    except TypeError as err:
        raise ValueError(f"config kwargs do not fit {name}: {err}; fix config['kwargs']") from err


@dataclass
class InferenceBundle:
    """A loaded bundle: the model (eval mode), its config, the tokenizer (or None) and the labels."""

    model: nn.Module
    config: dict[str, Any]
    tokenizer: Any = None
    labels: list[str] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")


def _check_state_fits(model: nn.Module, config: Mapping[str, Any]) -> None:
    """Build the model from ``config`` and compare its state-dict keys and shapes with ``model``'s."""
    from course_lib.checkpoint import CheckpointError, load_model_state

    try:
        load_model_state(build_model(config), {k: v.cpu() for k, v in model.state_dict().items()})
    except CheckpointError as err:
        raise ValueError(
            f"the config does not describe this model, so the bundle could not be loaded back: {err}"
        ) from err


def save_for_inference(
    model: nn.Module,
    path: str | Path,
    config: Mapping[str, Any],
    tokenizer_path: str | Path | None = None,
) -> Path:
    """Write ``model`` to the folder ``path``: ``model.pt`` (weights), ``config.json`` and the tokenizer.

    ``config`` = ``{"architecture": "MLP", "kwargs": {...}}`` plus anything to keep with it, such as
    ``"labels": ["business", ...]`` (names of the output classes) or ``"max_length": 128``. The config is
    checked by building the model from it, so a bundle that would not load back is never written.
    ``tokenizer_path`` is copied in: a course tokenizer JSON (``BPETokenizer.save``) or a Hugging Face
    ``tokenizer.json`` (WordPiece, as MiniLM ships).
    """
    config = dict(config)
    if "format" in config or "tokenizer" in config:
        raise ValueError("config keys 'format' and 'tokenizer' are written by save_for_inference; drop them")
    json.dumps(config)  # fail early (TypeError) on anything JSON cannot hold
    _check_state_fits(model, config)
    if config["architecture"] in TEXT_ARCHITECTURES and tokenizer_path is None:
        raise ValueError(
            f"a {config['architecture']} reads token ids: pass tokenizer_path=... to save it too"
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, path / WEIGHTS_FILE)
    sidecar = {"format": BUNDLE_FORMAT, **config}
    if tokenizer_path is not None:
        tokenizer_path = Path(tokenizer_path)
        if not tokenizer_path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {tokenizer_path}; pass the tokenizer's JSON file")
        shutil.copyfile(tokenizer_path, path / TOKENIZER_FILE)
        sidecar["tokenizer"] = TOKENIZER_FILE
    (path / CONFIG_FILE).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return path


def load_tokenizer_file(path: str | Path, max_length: int = DEFAULT_MAX_LENGTH) -> Any:
    """A course tokenizer (``format`` course_lib.char / course_lib.bpe) or a WordPiece ``tokenizer.json``."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and str(data.get("format", "")).startswith("course_lib."):
        from course_lib.tokenizers import load_tokenizer

        return load_tokenizer(path)
    from course_lib.encoder import WordPieceTokenizer

    return WordPieceTokenizer(path, max_length=max_length)


def _read_bundle_config(path: Path) -> dict[str, Any]:
    """``config.json`` of the bundle at ``path``, checked: valid JSON, our format, sizes within bounds."""
    file = path / CONFIG_FILE
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{file} is not valid JSON ({err}); save the bundle again with save_for_inference"
        raise ValueError(msg) from err
    if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(
            f"{file} has format {found!r}, expected {BUNDLE_FORMAT!r}; re-save the model with "
            "save_for_inference"
        )
    if not isinstance(config.get("kwargs", {}), dict) or config.get("architecture") not in ARCHITECTURES:
        raise ValueError(
            f"{file}: 'architecture' must be one of {sorted(ARCHITECTURES)} and 'kwargs' an object, got "
            f"{config.get('architecture')!r}; save the bundle again with save_for_inference"
        )
    too_big = [f"{k}={v}" for k, v in _numbers(config["kwargs"]) if abs(v) > MAX_KWARG_INT]
    if too_big:
        raise ValueError(
            f"{file} asks for sizes {too_big[:4]}, above the limit {MAX_KWARG_INT:,}: the file is damaged "
            "or crafted; the model is not built"
        )
    return config


def _numbers(kwargs: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every number in a (nested) kwargs object, as ``(dotted.key, value)``."""
    if isinstance(kwargs, dict):
        return [x for k, v in kwargs.items() for x in _numbers(v, f"{prefix}{k}.")]
    if isinstance(kwargs, list):
        return [x for i, v in enumerate(kwargs) for x in _numbers(v, f"{prefix}{i}.")]
    if isinstance(kwargs, (int, float)) and not isinstance(kwargs, bool):
        return [(prefix.rstrip("."), kwargs)]
    return []


def _member(path: Path, name: Any, key: str) -> Path:
    """The file ``name`` (from config[key]) inside the bundle folder ``path``; nothing outside it."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or Path(name).name != name:
        raise ValueError(
            f"{path / CONFIG_FILE}: {key}={name!r} must be a plain file name inside the bundle (like "
            f"{TOKENIZER_FILE!r}); paths are refused so a bundle cannot read files outside its folder"
        )
    member = path / name
    if not member.resolve().is_relative_to(path.resolve()):  # a symbolic link pointing out of the folder
        raise ValueError(f"{member} points outside the bundle {path}; copy the file into the bundle")
    return member


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    """``model.pt`` as a dict of finite tensors (read with ``weights_only=True``), or a ValueError."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{file} holds more than tensors, so it is not loaded (weights_only=True); "
            f"save only model.state_dict() with save_for_inference. Details: {str(err).splitlines()[0]}"
        ) from err
    except Exception as err:  # a truncated zip, random bytes, an empty file ...
        first = str(err).splitlines()[0][:160] if str(err) else ""
        raise ValueError(
            f"{file} is not a readable weights file ({type(err).__name__}: {first}); it is corrupt or cut "
            "short: save the bundle again with save_for_inference"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file} is not a state dict of tensors; save the bundle with save_for_inference")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(
            f"{file} holds NaN or infinite weights in {bad[:4]}: it was saved after training diverged. "
            "Train again (lower lr, grad_clip) and save a finite model"
        )
    return state


def load_for_inference(path: str | Path, device: torch.device | str | None = None) -> InferenceBundle:
    """Rebuild the model a :func:`save_for_inference` folder holds, in eval mode on ``device``
    (default: :func:`course_lib.env.get_device`).

    The weights are read with ``torch.load(weights_only=True)``: a file holding anything but tensors
    and plain containers is refused rather than run. The model is first built on the ``meta`` device
    (no memory) and compared with the weights, so a config asking for a huge model fails before
    allocating it; the tokenizer must be a file inside the folder.
    """
    from course_lib.checkpoint import CheckpointError, _strip_prefixes, load_model_state, state_dict_mismatch

    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not an inference bundle (it needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "write one with save_for_inference(model, path, config)"
        )
    config = _read_bundle_config(path)
    tokenizer_file = _member(path, config["tokenizer"], "tokenizer") if config.get("tokenizer") else None
    state = _read_weights(path / WEIGHTS_FILE)
    with torch.device("meta"):  # shapes only: nothing is allocated until they match the weights
        shell = build_model(config)
    problem = state_dict_mismatch(shell.state_dict(), _strip_prefixes(state), source=WEIGHTS_FILE)
    if problem:
        raise CheckpointError(
            f"{path / CONFIG_FILE} does not describe the weights in {WEIGHTS_FILE}: {problem}; the bundle is "
            "damaged: save it again with save_for_inference"
        )
    model = build_model(config)
    load_model_state(model, state)  # raises naming missing / unexpected / mis-shaped keys
    device = get_device() if device is None else torch.device(device)
    tokenizer = None
    if tokenizer_file is not None:
        try:
            tokenizer = load_tokenizer_file(tokenizer_file, config.get("max_length", DEFAULT_MAX_LENGTH))
        except (ValueError, KeyError, TypeError) as err:
            msg = f"{tokenizer_file} is not a usable tokenizer ({err}); save the bundle again"
            raise ValueError(msg) from err
    return InferenceBundle(model.to(device).eval(), config, tokenizer, list(config.get("labels", [])))


def encode_texts(bundle: InferenceBundle, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Texts -> right-padded ``input_ids`` and ``attention_mask`` (B, T) with the bundle's tokenizer."""
    if bundle.tokenizer is None:
        raise ValueError("this bundle has no tokenizer, so it cannot read text; save it with tokenizer_path=")
    max_len = int(bundle.config.get("max_length", DEFAULT_MAX_LENGTH))
    tok = bundle.tokenizer
    if hasattr(tok, "pad_id"):  # WordPiece: adds [CLS]/[SEP], truncates and pads itself
        return tok.encode_batch(list(texts), max_length=max_len)
    ids = [tok.encode(t)[:max_len] or [0] for t in texts]  # course tokenizers: plain ids
    T = max(len(x) for x in ids)
    input_ids = torch.zeros(len(ids), T, dtype=torch.long)  # (B, T) padded with id 0 (masked out)
    mask = torch.zeros(len(ids), T, dtype=torch.long)  # (B, T) 1 = real token
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@torch.inference_mode()
def predict_proba(bundle: InferenceBundle, inputs: Sequence[str] | torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, C): texts go through the tokenizer, tensors straight into the model.
    NaN/inf in the inputs or the outputs is an error naming the rows, never a printed ``nan``."""
    if isinstance(inputs, torch.Tensor):
        if inputs.is_floating_point() and not torch.isfinite(inputs).all():
            rows = (~torch.isfinite(inputs.flatten(1) if inputs.dim() > 1 else inputs[:, None])).any(1)
            raise ValueError(
                f"inputs {rows.nonzero().flatten().tolist()[:8]} hold NaN or inf values; fix those inputs"
            )
        out = bundle.model(inputs.to(bundle.device))
    else:
        batch = {k: v.to(bundle.device) for k, v in encode_texts(bundle, inputs).items()}
        out = bundle.model(batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out[0] if isinstance(out, (tuple, list)) else out  # classifiers return (logits, loss)
    if logits.dim() != 2:
        raise ValueError(
            f"expected class logits (N, C), got shape {tuple(logits.shape)}; is this a classifier?"
        )
    probs = F.softmax(logits.float(), dim=-1).cpu()
    if not torch.isfinite(probs).all():
        rows = (~torch.isfinite(probs)).any(1).nonzero().flatten().tolist()
        raise ValueError(f"the model gave NaN/inf for inputs {rows[:8]}; check the model weights and inputs")
    return probs


# ----------------------------------------------------------------------------------------------------
# 2. Exported graphs


def _as_args(example: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return example if isinstance(example, tuple) else (example,)


def _dynamic_shapes(args: tuple[torch.Tensor, ...], dynamic_dims: Sequence[int]) -> tuple | None:
    """Mark ``dynamic_dims`` of every input as free to change (e.g. (0,) batch, (0, 1) batch and length)."""
    for x in args:
        if any(d >= x.dim() for d in dynamic_dims):
            raise ValueError(
                f"dynamic_dims={tuple(dynamic_dims)} but an example input has shape {tuple(x.shape)}; "
                "use (0,) for one example per row, (0, 1) for token ids (batch, length)"
            )
    return tuple({d: torch.export.Dim.AUTO for d in dynamic_dims} for _ in args) if dynamic_dims else None


def export_torch(
    model: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | Path,
    dynamic_dims: Sequence[int] = (0,),
) -> Path:
    """Trace ``model`` with ``torch.export`` and save the graph to ``path`` (``.pt2``).

    The file holds the operations and the weights, so :func:`load_exported` runs it without the model's
    Python class. The ``dynamic_dims`` of every input may change from call to call: (0,) the batch size,
    (0, 1) also the length of token ids; () fixes every shape. Give an example with at least 2 along
    each of them (the tracer treats a size of 1 as a constant).
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"torch.export files end in .pt2, got {path.name!r}")
    args = _as_args(example)
    dynamic = _dynamic_shapes(args, dynamic_dims)
    was_training = model.training
    program = torch.export.export(model.eval(), args, dynamic_shapes=dynamic)
    model.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    return path


def load_exported(path: str | Path, *, trusted: bool = False) -> nn.Module:
    """The callable module inside a ``.pt2`` file written by :func:`export_torch`.

    ``torch.export.load`` unpickles parts of the file without ``weights_only``, so a crafted ``.pt2``
    runs code when opened. Pass ``trusted=True`` only for files you wrote yourself (or got from a source
    you trust as much as its code); for anything else ship a bundle (:func:`load_for_inference`) or ONNX.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported program at {path}; write one with export_torch(model, x, path)")
    if trusted is not True:
        raise PermissionError(
            f"not opening {path}: loading a .pt2 file can run code stored in it. If you wrote it yourself, "
            "call load_exported(path, trusted=True); otherwise ask for a save_for_inference bundle or ONNX"
        )
    return torch.export.load(path).module()


def onnx_available() -> bool:
    """True when the optional packages ``onnx`` and ``onnxscript`` (torch's ONNX exporter) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


def export_onnx(
    model: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | Path,
    dynamic_dims: Sequence[int] = (0,),
    external_data: bool = False,
) -> Path:
    """Export to an ONNX file (for ONNX Runtime, browsers, other languages); checked with ``onnx.checker``.

    Needs ``pip install onnx onnxscript`` (``onnxruntime`` to run the file); the inputs are named
    ``input_0, input_1, ...`` and the output ``output``; ``dynamic_dims`` as in :func:`export_torch`.
    The weights go inside the one file unless ``external_data=True`` puts them in ``<path>.data``
    beside it (needed above ONNX's 2 GB limit).
    """
    if not onnx_available():
        raise ModuleNotFoundError(
            "ONNX export needs the optional packages onnx and onnxscript: pip install onnx onnxscript"
        )
    import onnx

    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX files end in .onnx, got {path.name!r}")
    args = _as_args(example)
    dynamic = _dynamic_shapes(args, dynamic_dims)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" etc.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch's own exporter
            torch.onnx.export(
                model.eval(),
                args,
                str(path),
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=[f"input_{i}" for i in range(len(args))],
                output_names=["output"],
                external_data=external_data,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
        model.train(was_training)
    onnx.checker.check_model(str(path))  # the path form also works for files with external data
    return path


# ----------------------------------------------------------------------------------------------------
# 3. Throughput


def batched_throughput(
    model: nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    batch_sizes: Sequence[int] = (1, 8, 32, 128),
    repeats: int = 10,
    warmup: int = 2,
) -> list[dict[str, float]]:
    """Items per second at each batch size: one row ``{"batch_size", "latency_ms", "items_per_s"}`` each.

    ``inputs`` holds at least ``max(batch_sizes)`` items along dim 0 (a tuple of tensors is sliced
    together). Latency is the median of ``repeats`` calls (:func:`course_lib.compress.measure_latency`).
    """
    from course_lib.compress import measure_latency

    args = _as_args(inputs)
    n = args[0].shape[0]
    if not batch_sizes or min(batch_sizes) < 1 or max(batch_sizes) > n:
        raise ValueError(
            f"batch sizes must lie in [1, {n}] (the number of items given), got {list(batch_sizes)}; "
            "pass more inputs or smaller batch sizes"
        )
    rows = []
    for bs in batch_sizes:
        batch = tuple(a[:bs] for a in args)
        seconds = measure_latency(model, batch, repeats=repeats, warmup=warmup)
        rows.append({"batch_size": bs, "latency_ms": seconds * 1e3, "items_per_s": bs / seconds})
    return rows


# ----------------------------------------------------------------------------------------------------
# 4. Predictions on the command line


IMAGE_ARCHITECTURES = ("DigitCNN", "MLP")  # take the digits' (N, 1, side, side) images, flat for the MLP
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def image_side(config: Mapping[str, Any]) -> int:
    """The side of the square images an image bundle reads: ``image_size``, or sqrt(inputs) of an MLP."""
    kwargs = config.get("kwargs", {})
    if config["architecture"] != "MLP":
        return int(kwargs.get("image_size", 8))  # DigitCNN's default: the digits' 8 x 8
    n_in = int(kwargs["sizes"][0])
    side = math.isqrt(n_in)
    if side * side != n_in:
        raise ValueError(
            f"this MLP takes {n_in} inputs, not a square image; pass it tensors, not image files"
        )
    return side


def read_images(paths: Sequence[str | Path], side: int) -> torch.Tensor:
    """Image files or ``.npy`` arrays -> (N, 1, side, side) in [0, 1], 1 = ink, as ``load_digits() / 16``.

    A picture is turned grey and resized to side x side (box filter: each pixel averages its area);
    a light background (mean above one half, i.e. dark ink on paper) is inverted. A ``.npy`` file holds
    one (side, side) image or a stack (k, side, side), already scaled to [0, 1].
    """
    from PIL import Image

    images = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(
                f"no image at {path}; pass image files ({', '.join(IMAGE_SUFFIXES)}) or .npy"
            )
        if path.suffix.lower() == ".npy":
            try:
                arr = np.load(path, allow_pickle=False).astype(np.float32)
            except (ValueError, OSError, EOFError) as err:
                msg = f"{path} is not a readable .npy array ({err}); write it with np.save"
                raise ValueError(msg) from err
            arr = arr[None] if arr.ndim == 2 else arr
            if not np.isfinite(arr).all():
                raise ValueError(f"{path} holds NaN or inf values; pass images with values in [0, 1]")
            if arr.ndim != 3 or arr.shape[1:] != (side, side) or arr.min() < 0 or arr.max() > 1:
                raise ValueError(
                    f"{path}: expected ({side}, {side}) or (k, {side}, {side}) values in [0, 1], got shape "
                    f"{arr.shape}, range {arr.min():g}..{arr.max():g}; scale the digits with / 16"
                )
            images.extend(arr)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                grey = Image.open(path).convert("L").resize((side, side), Image.Resampling.BOX)
            except (OSError, ValueError, Image.DecompressionBombError) as err:  # empty, cut short, no image
                raise ValueError(
                    f"{path} is not a readable image ({type(err).__name__}: {err}); pass a PNG/JPEG file"
                ) from err
            arr = np.asarray(grey, dtype=np.float32) / 255.0  # (side, side), 1 = white
            images.append(1.0 - arr if arr.mean() > 0.5 else arr)
        else:
            raise ValueError(f"{path}: unknown image type; use {', '.join(IMAGE_SUFFIXES)} or .npy")
    return torch.from_numpy(np.stack(images)).unsqueeze(1)  # (N, 1, side, side)


def print_predictions(
    model_dir: str | Path, inputs: Sequence[str], top: int = 3, device: torch.device | str | None = None
) -> None:
    """Print, for each input, the input, then the ``top`` most likely labels with their probabilities.

    ``model_dir`` is a bundle of :func:`save_for_inference`. Inputs are texts for a text model, image files
    or ``.npy`` arrays (:func:`read_images`) for an image model.
    """
    bundle = load_for_inference(model_dir, device=device)
    if bundle.config["architecture"] in IMAGE_ARCHITECTURES:
        images = read_images(inputs, image_side(bundle.config))  # (N, 1, side, side)
        if bundle.config["architecture"] == "MLP":
            images = images.flatten(1)  # (N, side * side)
        names = [Path(p).name for p in inputs]
        if len(images) != len(names):  # a .npy stack holds several images
            names = [f"image {i}" for i in range(len(images))]
        probs = predict_proba(bundle, images)  # (N, C)
    else:
        names, probs = list(inputs), predict_proba(bundle, inputs)  # (N, C)
    labels = bundle.labels or [str(i) for i in range(probs.shape[1])]
    if len(labels) != probs.shape[1]:
        raise ValueError(
            f"the config lists {len(labels)} labels but the model outputs {probs.shape[1]} classes; "
            "fix config['labels'] and save the bundle again"
        )
    top = max(1, min(top, probs.shape[1]))
    for name, p in zip(names, probs):
        print(name if len(name) <= 70 else name[:67] + "...")
        values, idx = torch.topk(p, top)
        for v, i in zip(values.tolist(), idx.tolist()):
            print(f"  {labels[i]:<16} {v:.4f}")
