"""Run configs: the sections a config file holds, how files and ``--set`` overrides merge, their errors.

A config file (JSON or TOML) has up to five sections:

    data      which corpus and tokenizer (:class:`DataConfig`)
    model     ``name`` of a course_lib.gpt config plus any GPTConfig field to override (pretrain only)
    train     :class:`course_lib.trainer.TrainConfig` fields
    finetune  which checkpoint and how much of it to train (:class:`FinetuneConfig`, finetune only)
    fast      ``{"section.key": value}`` overrides applied when COURSE_FAST=1 (CI, quick checks)

``section.key=value`` overrides come last (:func:`load_config`); values are converted to the field's
type (:func:`coerce`), and an unknown section or key is an error naming it and listing the valid ones.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.datasets import CLASSIFICATION_CORPORA, PRETRAIN_CORPORA
from course_lib.env import fast_mode
from course_lib.finetuning import FINETUNE_MODES

SECTIONS = {
    "pretrain": ("data", "model", "train"),
    "finetune": ("data", "finetune", "train"),
}


class ConfigError(ValueError):
    """A config file or ``--set`` override that cannot be used; the message says what to change."""


# ----------------------------------------------------------------------------------------------------
# config sections


@dataclass
class DataConfig:
    """The ``data`` section: what text to read and how to tokenize it."""

    corpus: str = "bbc_news"  # pretrain: bbc_news | peoples_daily; finetune: bbc_topics | chinese_reviews
    tokenizer: str = "bpe"  # pretrain only: "bpe" (byte-level BPE) or "char" (one id per character)
    vocab_size: int = 2048  # BPE vocabulary size (bytes + merges + <|endoftext|>); ignored for "char"
    val_fraction: float = 0.1  # pretrain: the tail of the token stream held out for validation
    max_docs: int | None = None  # use only this many documents (a shuffled, fixed subset); None = all
    max_length: int | None = None  # finetune: truncate texts to this many tokens (None = block_size)

    def __post_init__(self) -> None:
        if self.tokenizer not in ("bpe", "char"):
            raise ConfigError(f"data.tokenizer must be 'bpe' or 'char', got {self.tokenizer!r}")
        if self.max_docs is not None and self.max_docs < 2:
            raise ConfigError(f"data.max_docs must be >= 2 or null, got {self.max_docs}")


@dataclass
class FinetuneConfig:
    """The ``finetune`` section: the pretrained checkpoint and which of its weights to train."""

    checkpoint: str | None = None  # a pretrain checkpoint (last.pt / best.pt); required
    mode: str = "head"  # "head" (frozen GPT), "last_n" (top blocks + head), "full", or "lora"
    last_n: int = 1  # mode="last_n": how many of the top transformer blocks train
    dropout: float = 0.1  # dropout before the classification head
    lora_r: int = 8  # mode="lora": rank of the low-rank update
    lora_alpha: float = 16.0  # mode="lora": scale of the update is alpha / r
    lora_targets: list[str] = field(default_factory=lambda: ["qkv", "proj"])  # Linear names to adapt
    test_fraction: float = 0.1  # the held-out test split (a validation split of the same size is made too)

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ConfigError(f"finetune.mode must be one of {FINETUNE_MODES}, got {self.mode!r}")
        if not 0 < self.test_fraction < 0.5:
            raise ConfigError(f"finetune.test_fraction must be in (0, 0.5), got {self.test_fraction}")


def section_types(section: str) -> dict[str, Any]:
    """Field name -> type for one config section (what ``--set`` converts values to)."""
    from course_lib.trainer import TrainConfig

    if section == "data":
        return typing.get_type_hints(DataConfig)
    if section == "finetune":
        return typing.get_type_hints(FinetuneConfig)
    if section == "train":
        return typing.get_type_hints(TrainConfig)
    if section == "model":
        from course_lib.gpt import GPTConfig

        return {"name": str, **typing.get_type_hints(GPTConfig)}
    raise KeyError(section)


# ----------------------------------------------------------------------------------------------------
# reading, merging and overriding configs


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON (``.json``) or TOML (``.toml``) config file as a dict of sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass --config with a file from configs/")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib
            except ModuleNotFoundError as e:
                raise ConfigError("reading TOML on Python 3.10 needs `pip install tomli`; or use JSON") from e
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from e
    else:
        raise ConfigError(f"{path}: config files must end in .json or .toml, got {path.suffix!r}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table/object of sections, got {type(data).__name__}")
    return data


def coerce(text: str, tp: Any, key: str) -> Any:
    """Convert the ``text`` of ``--set key=text`` to type ``tp`` (int, float, bool, str, None, lists)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(text, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}={text!r} fits none of {tp}: {'; '.join(errors)}")
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} takes true or false, got {text!r}")
    if tp is int:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key} takes an integer, got {text!r}") from None
        if not value.is_integer():
            raise ConfigError(f"{key} takes an integer, got {text!r}")
        return int(value)
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} takes a number, got {text!r}") from None
    if tp is str or tp is Any:
        return text
    if origin in (list, tuple):
        # "[0.9, 0.95]" (JSON) or "0.9,0.95"
        items = json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t]
        values = [coerce(str(v), args[0] if args else Any, key) for v in items]
        return values if origin is list else tuple(values)
    raise ConfigError(f"{key}: cannot convert {text!r} to {tp}")


def apply_overrides(
    config: dict[str, Any], overrides: Sequence[str] | Mapping[str, Any], sections: Sequence[str]
) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (or a ``{"section.key": value}`` mapping) to a config dict."""
    config = {k: dict(v) for k, v in config.items()}
    items = overrides.items() if isinstance(overrides, Mapping) else [_split_override(o) for o in overrides]
    for dotted, value in items:
        section, _, key = dotted.partition(".")
        if section not in sections or not key:
            raise ConfigError(
                f"unknown config key {dotted!r}; keys look like section.name with section one of "
                f"{', '.join(sections)} (e.g. train.max_steps=20)"
            )
        valid = section_types(section)
        if key not in valid:
            raise ConfigError(
                f"unknown config key {dotted!r}; valid keys in [{section}] are: {', '.join(sorted(valid))}"
            )
        config.setdefault(section, {})[key] = (
            coerce(value, valid[key], dotted) if isinstance(value, str) else value
        )
    return config


def _split_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes section.key=value pairs, got {text!r} (e.g. --set train.lr=1e-3)")
    return key.strip(), value


def load_config(
    command: str, path: str | Path | None, overrides: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """The merged config for ``command``: the file, its ``fast`` overrides (COURSE_FAST=1), ``--set``."""
    sections = SECTIONS[command]
    raw = read_config_file(path) if path else {}
    unknown = [k for k in raw if k not in (*sections, "fast")]
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {unknown} for {command}; "
            f"valid sections are: {', '.join(sections)}, fast"
        )
    config = {s: dict(raw.get(s, {})) for s in sections}
    for section in sections:  # keys written in the file are checked as strictly as --set keys
        valid = section_types(section)
        bad = [k for k in config[section] if k not in valid]
        if bad:
            raise ConfigError(
                f"unknown config key(s) {[f'{section}.{k}' for k in bad]}; valid keys in [{section}] are: "
                f"{', '.join(sorted(valid))}"
            )
    if fast_mode() and raw.get("fast"):
        config = apply_overrides(config, raw["fast"], sections)
    return apply_overrides(config, overrides, sections)


def checked(section: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a config object; its own ValueError/TypeError becomes a ConfigError naming the section."""
    try:
        return build(*args, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{section}] {e}") from e


def check_corpus(data: DataConfig, command: str) -> None:
    """``data.corpus`` must be one the command reads: a pretraining corpus or a classification task."""
    valid = PRETRAIN_CORPORA if command == "pretrain" else CLASSIFICATION_CORPORA
    if data.corpus not in valid:
        raise ConfigError(f"data.corpus for {command} must be one of {valid}, got {data.corpus!r}")


__all__ = [
    "SECTIONS",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "apply_overrides",
    "check_corpus",
    "checked",
    "coerce",
    "load_config",
    "read_config_file",
    "section_types",
]
