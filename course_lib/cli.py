"""The command line: pretrain a GPT, fine-tune it as a classifier, sample from it.

    python -m course_lib pretrain --config configs/pretrain_tiny.json --set train.max_steps=20 model.n_layer=2
    python -m course_lib finetune --config configs/finetune_bbc.json --set finetune.mode=lora
    python -m course_lib generate --checkpoint ~/.cache/course_lib/runs/pretrain_tiny/last.pt --prompt "The"

A config file (JSON or TOML) has up to five sections:

    data      which corpus and tokenizer (:class:`DataConfig`)
    model     ``name`` of a course_lib.gpt config plus any GPTConfig field to override (pretrain only)
    train     :class:`course_lib.trainer.TrainConfig` fields
    finetune  which checkpoint and how much of it to train (:class:`FinetuneConfig`, finetune only)
    fast      ``{"section.key": value}`` overrides applied when COURSE_FAST=1 (CI, quick checks)

``--set section.key=value`` overrides come last; values are converted to the field's type, and an
unknown section or key is an error naming it and listing the valid ones. Every command runs
unchanged under torchrun (``torchrun --nproc_per_node 4 -m course_lib pretrain ...``): rank 0
prepares the tokenizer and the token cache while the others wait, then all train together.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from course_lib.env import cache_dir, display_path, fast_mode, get_device, seed_everything
from course_lib.finetuning import FINETUNE_MODES

SECTIONS = {
    "pretrain": ("data", "model", "train"),
    "finetune": ("data", "finetune", "train"),
}
PRETRAIN_CORPORA = ("bbc_news", "peoples_daily")
FINETUNE_TASKS = ("bbc_topics", "chinese_reviews")


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


def _section_types(section: str) -> dict[str, Any]:
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
        valid = _section_types(section)
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
        valid = _section_types(section)
        bad = [k for k in config[section] if k not in valid]
        if bad:
            raise ConfigError(
                f"unknown config key(s) {[f'{section}.{k}' for k in bad]}; valid keys in [{section}] are: "
                f"{', '.join(sorted(valid))}"
            )
    if fast_mode() and raw.get("fast"):
        config = apply_overrides(config, raw["fast"], sections)
    return apply_overrides(config, overrides, sections)


def _checked(section: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a config object; its own ValueError/TypeError becomes a ConfigError naming the section."""
    try:
        return build(*args, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{section}] {e}") from e


# ----------------------------------------------------------------------------------------------------
# data preparation


def _shuffled(docs: list[Any], max_docs: int | None) -> list[Any]:
    """A fixed shuffle (seed 0, independent of the training seed, so caches stay valid) and a cut."""
    order = np.random.default_rng(0).permutation(len(docs))
    docs = [docs[i] for i in order]
    return docs[:max_docs] if max_docs else docs


def pretrain_texts(data: DataConfig) -> list[str]:
    """The documents of the pretraining corpus (paragraphs end in a newline for People's Daily)."""
    from course_lib import datasets

    if data.corpus == "bbc_news":
        return _shuffled([a.text for a in datasets.bbc_news()], data.max_docs)
    if data.corpus == "peoples_daily":
        return _shuffled([p + "\n" for p in datasets.peoples_daily_text(join=False)], data.max_docs)
    raise ConfigError(f"data.corpus for pretrain must be one of {PRETRAIN_CORPORA}, got {data.corpus!r}")


def build_tokenizer(
    data: DataConfig, texts: Callable[[], list[str]], show_progress: bool = False
) -> tuple[Any, Path]:
    """Train the tokenizer once and keep it in the cache; later runs (and other ranks) load it."""
    from course_lib.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer

    size = "" if data.tokenizer == "char" else f"-{data.vocab_size}"
    path = cache_dir("tokenizers") / f"{data.corpus}-{data.tokenizer}{size}-{data.max_docs or 'all'}.json"
    if path.is_file():
        return load_tokenizer(path), path
    if data.tokenizer == "char":
        tok = CharTokenizer.train(texts())
    else:
        tok = BPETokenizer.train(texts(), data.vocab_size, show_progress=show_progress)
    tok.save(path)
    return tok, path


def _tokenizer_meta(tok: Any, path: Path) -> dict[str, str]:
    return {"tokenizer_path": str(path), "tokenizer_json": path.read_text(encoding="utf-8")}


def tokenizer_from_meta(meta: Mapping[str, Any]) -> Any:
    """The tokenizer a checkpoint was trained with: its cached file, or the copy inside the checkpoint."""
    from course_lib.tokenizers import load_tokenizer

    path = Path(meta["tokenizer_path"])
    if not path.is_file():  # the cache was cleared or the checkpoint came from another machine
        path = cache_dir("tokenizers") / f"restored-{abs(hash(meta['tokenizer_json'])) % 10**12}.json"
        path.write_text(meta["tokenizer_json"], encoding="utf-8")
    return load_tokenizer(path)


# ----------------------------------------------------------------------------------------------------
# commands


def _rank0_first(dist: Any, fn: Any) -> Any:
    """Run ``fn`` on rank 0 first (it fills the caches) and on the other ranks after (they read them)."""
    from course_lib.distributed import barrier

    if dist.is_main:
        out = fn()
        barrier(dist)
    else:
        barrier(dist)
        out = fn()
    return out


def _say(dist: Any, msg: str) -> None:
    if dist.is_main:
        print(msg, flush=True)


def cmd_pretrain(
    config: dict[str, dict[str, Any]], resume: bool = False, run_name: str | None = None
) -> Path:
    """Corpus -> tokenizer (cached) -> TokenCache -> GPT -> Trainer; returns the last checkpoint's path.

    Checkpoints go to ``train.out_dir``, by default ``<cache>/runs/<run_name>`` (the config file's name).
    """
    from course_lib.distributed import destroy_distributed, init_distributed
    from course_lib.gpt import GPT, get_config
    from course_lib.lm_data import TokenCache, get_batch
    from course_lib.trainer import TrainConfig, Trainer

    data = _checked("data", DataConfig, **config["data"])
    if data.corpus not in PRETRAIN_CORPORA:
        raise ConfigError(f"data.corpus for pretrain must be one of {PRETRAIN_CORPORA}, got {data.corpus!r}")
    train_values = dict(config["train"])
    train_values.setdefault("out_dir", str(cache_dir("runs", run_name or f"pretrain-{data.corpus}")))
    train_cfg = _checked("train", TrainConfig.from_dict, train_values)
    model_values = dict(config["model"])
    name = model_values.pop("name", "tiny")

    dist = init_distributed(get_device(train_cfg.device).type)
    try:

        def prepare() -> tuple[Any, Path, Any]:
            texts = functools.cache(lambda: pretrain_texts(data))  # read at most once, only on a cache miss
            tok, tok_path = build_tokenizer(data, texts, show_progress=train_cfg.progress)
            sep = getattr(tok, "special_tokens", {}).get("<|endoftext|>") if data.tokenizer == "bpe" else None
            source = f"{data.corpus}-{data.max_docs or 'all'}"
            cache = TokenCache(tok, source, texts, val_fraction=data.val_fraction, separator_id=sep)
            cache.build()
            return tok, tok_path, cache

        tok, tok_path, cache = _rank0_first(dist, prepare)
        if "vocab_size" in model_values and model_values["vocab_size"] != tok.vocab_size:
            raise ConfigError(
                f"model.vocab_size={model_values['vocab_size']} but the tokenizer has {tok.vocab_size} ids; "
                "drop model.vocab_size (it is taken from the tokenizer) or change data.vocab_size"
            )
        model_values["vocab_size"] = tok.vocab_size
        seed_everything(train_cfg.seed)  # the same initial weights on every rank
        gpt_cfg = _checked("model", get_config, name, **model_values)
        model = GPT(gpt_cfg)
        train_ids, val_ids = cache.train, cache.val
        B, T = train_cfg.batch_size, gpt_cfg.block_size
        sizes = f"{len(train_ids):,} train / {len(val_ids):,} val tokens"
        _say(dist, f"pretrain: {model.num_parameters():,} parameters, {sizes}, {dist.world_size} process(es)")

        def train_batch(step: int, g: Any) -> Any:
            return get_batch(train_ids, B, T, g, device="cpu")

        def val_batch(step: int, g: Any) -> Any:
            return get_batch(val_ids, B, T, g, device="cpu")

        meta = {
            "kind": "pretrain",
            "model_name": name,
            "model_config": gpt_cfg.to_dict(),
            "data": dataclasses.asdict(data),
            **_tokenizer_meta(tok, tok_path),
        }
        trainer = Trainer(model, train_cfg, train_batch, val_batch, resume=resume, meta=meta)
        trainer.fit()
        _say(dist, f"checkpoint: {display_path(trainer.last_path)}")
        return trainer.last_path
    finally:
        destroy_distributed(dist)


def _finetune_texts(data: DataConfig) -> tuple[list[str], list[int], list[str]]:
    from course_lib import datasets

    if data.corpus == "bbc_topics":
        articles = datasets.bbc_news()
        texts, labels = [a.text for a in articles], [a.label_id for a in articles]
        names = list(datasets.BBC_LABELS)  # label_id i is BBC_LABELS[i]
    elif data.corpus == "chinese_reviews":
        texts, labels = datasets.chinese_reviews()
        names = ["negative", "positive"]
    else:
        raise ConfigError(f"data.corpus for finetune must be one of {FINETUNE_TASKS}, got {data.corpus!r}")
    if data.max_docs:
        order = np.random.default_rng(0).permutation(len(texts))[: data.max_docs]
        texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    return texts, labels, names


def build_classifier(
    gpt_cfg: Any, n_classes: int, ft: FinetuneConfig, state: Mapping[str, Any] | None
) -> Any:
    """A GPTClassifier on a pretrained GPT, with the parameters ``ft.mode`` says to train left trainable."""
    from course_lib.checkpoint import load_model_state
    from course_lib.finetuning import prepare_for_finetuning
    from course_lib.gpt import GPT
    from course_lib.heads import GPTClassifier

    gpt = GPT(gpt_cfg)
    if state is not None:
        load_model_state(gpt, state)
    clf = GPTClassifier(gpt, n_classes, dropout=ft.dropout)
    lora = {"lora_r": ft.lora_r, "lora_alpha": ft.lora_alpha, "lora_targets": ft.lora_targets}
    prepare_for_finetuning(clf, ft.mode, last_n=ft.last_n, **lora)
    return clf


def cmd_finetune(
    config: dict[str, dict[str, Any]], resume: bool = False, run_name: str | None = None
) -> Path:
    """Pretrained GPT + classification head, trained as ``finetune.mode`` says; prints a test-set report."""
    from torch.utils.data import DataLoader

    from course_lib.checkpoint import load_checkpoint
    from course_lib.datasets import Splits
    from course_lib.distributed import destroy_distributed, init_distributed
    from course_lib.gpt import GPTConfig
    from course_lib.lm_data import ClassificationDataset, pad_collate
    from course_lib.metrics import classification_report
    from course_lib.trainer import TrainConfig, Trainer, move_to_device

    data = _checked("data", DataConfig, **config["data"])
    ft = _checked("finetune", FinetuneConfig, **config["finetune"])
    if not ft.checkpoint:
        raise ConfigError(
            "finetune.checkpoint is required: --set finetune.checkpoint=PATH/last.pt (from pretrain)"
        )
    train_values = dict(config["train"])
    run_name = f"{run_name or 'finetune-' + data.corpus}-{ft.mode}"
    train_values.setdefault("out_dir", str(cache_dir("runs", run_name)))
    train_cfg = _checked("train", TrainConfig.from_dict, train_values)
    ckpt = load_checkpoint(Path(ft.checkpoint).expanduser())
    meta = ckpt.get("meta") or {}
    if meta.get("kind") != "pretrain":
        raise ConfigError(
            f"{ft.checkpoint} is not a pretraining checkpoint written by `python -m course_lib pretrain` "
            f"(meta kind: {meta.get('kind')!r}); fine-tune from one of those"
        )
    gpt_cfg = GPTConfig.from_dict(meta["model_config"])
    tok = tokenizer_from_meta(meta)

    dist = init_distributed(get_device(train_cfg.device).type)
    try:
        texts, labels, names = _finetune_texts(data)
        max_len = min(data.max_length or gpt_cfg.block_size, gpt_cfg.block_size)
        ids = [tok.encode(t)[:max_len] or [0] for t in texts]
        splits = Splits.make(labels, (1 - 2 * ft.test_fraction, ft.test_fraction, ft.test_fraction), seed=0)
        (tr_ids, va_ids, te_ids), (tr_y, va_y, te_y) = splits.take(ids), splits.take(labels)
        collate = functools.partial(pad_collate, pad_id=0, max_length=max_len)  # the mask hides the pads

        def loader(token_ids: list, ys: list, shuffle: bool = False) -> DataLoader:
            dataset = ClassificationDataset(token_ids, ys)
            return DataLoader(dataset, train_cfg.batch_size, shuffle=shuffle, collate_fn=collate)

        train_loader, val_loader = loader(tr_ids, tr_y, shuffle=True), loader(va_ids, va_y)
        seed_everything(train_cfg.seed)
        clf = build_classifier(gpt_cfg, len(names), ft, ckpt["model"])
        n_train = sum(p.numel() for p in clf.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in clf.parameters())
        sizes = f"{len(tr_y)} train / {len(va_y)} val / {len(te_y)} test texts"
        _say(dist, f"finetune ({ft.mode}): {n_train:,} of {n_all:,} parameters train; {sizes}")
        run_meta = {
            "kind": "finetune",
            "model_config": gpt_cfg.to_dict(),
            "finetune": dataclasses.asdict(ft),
            "labels": names,
            "data": dataclasses.asdict(data),
            "tokenizer_path": meta["tokenizer_path"],
            "tokenizer_json": meta["tokenizer_json"],
        }
        trainer = Trainer(clf, train_cfg, train_loader, val_loader, resume=resume, meta=run_meta)
        trainer.fit()

        if dist.is_main:  # test-set report from rank 0 only
            clf.eval()
            preds, truth = [], []
            import torch

            with torch.no_grad():
                for batch in loader(te_ids, te_y):
                    batch = move_to_device(batch, trainer.device)
                    logits, _ = clf(batch["input_ids"], batch["attention_mask"])
                    preds += logits.argmax(-1).tolist()
                    truth += batch["labels"].tolist()
            report = classification_report(truth, preds, labels=list(range(len(names))), target_names=names)
            report_dict = classification_report(
                truth, preds, labels=list(range(len(names))), target_names=names, output_dict=True
            )
            (trainer.out_dir / "test_report.json").write_text(json.dumps(report_dict, indent=1))
            print(report, flush=True)
        _say(dist, f"checkpoint: {display_path(trainer.last_path)}")
        return trainer.last_path
    finally:
        destroy_distributed(dist)


def cmd_generate(args: argparse.Namespace) -> str:
    import torch

    from course_lib.checkpoint import load_checkpoint, load_model_state
    from course_lib.gpt import GPT, GPTConfig

    ckpt = load_checkpoint(Path(args.checkpoint).expanduser())
    meta = ckpt.get("meta") or {}
    if meta.get("kind") != "pretrain":
        raise ConfigError(
            f"{args.checkpoint} is not a language-model checkpoint (kind {meta.get('kind')!r}); "
            "generate from a `python -m course_lib pretrain` checkpoint"
        )
    device = get_device(args.device)
    model = GPT(GPTConfig.from_dict(meta["model_config"]))
    load_model_state(model, ckpt["model"])
    model.to(device).eval()
    tok = tokenizer_from_meta(meta)
    ids = tok.encode(args.prompt) if args.prompt else []
    if not ids:  # an empty prompt starts from the end-of-text token (BPE) or a newline (characters)
        specials = getattr(tok, "special_tokens", None)
        eot = specials.get("<|endoftext|>") if isinstance(specials, dict) else None
        ids = [eot] if eot is not None else tok.encode("\n")
    idx = torch.tensor([ids[-model.config.block_size :]], dtype=torch.long, device=device)  # (1, T)
    g = torch.Generator(device=device).manual_seed(args.seed)
    out = model.generate(
        idx,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=g,
    )
    text = tok.decode(out[0].tolist())
    print(text, flush=True)
    return text


# ----------------------------------------------------------------------------------------------------
# argument parsing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command, helptext in (
        ("pretrain", "train a GPT language model on a course corpus"),
        ("finetune", "fine-tune a pretrained GPT as a text classifier"),
    ):
        p = sub.add_parser(command, help=helptext)
        p.add_argument("--config", help="a JSON or TOML config file (see configs/)")
        example = "override config values, e.g. train.max_steps=20 model.n_layer=2"
        p.add_argument(
            "--set", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE", help=example
        )
        p.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
        p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    g = sub.add_parser("generate", help="sample text from a pretrained checkpoint")
    g.add_argument(
        "--checkpoint", required=True, help="a checkpoint written by pretrain (last.pt or best.pt)"
    )
    g.add_argument("--prompt", default="", help="text to continue (empty: start from scratch)")
    g.add_argument("--max-new-tokens", type=int, default=50)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more random")
    g.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass p")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    # `predict` has its own parser (course_lib.deploy.predict_main); listed here for --help
    sub.add_parser(
        "predict", help="classify texts or images with a model saved by course_lib.deploy", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m course_lib`` and the ``course`` script; returns the exit status."""
    from course_lib.checkpoint import CheckpointError
    from course_lib.trainer import NonFiniteLossError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach for the network
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        from course_lib.deploy import predict_main

        return predict_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            cmd_generate(args)
            return 0
        config = load_config(args.command, args.config, args.set)
        if args.print_config:
            print(json.dumps(config, indent=2))
            return 0
        run = cmd_pretrain if args.command == "pretrain" else cmd_finetune
        run(config, args.resume, Path(args.config).stem if args.config else None)
        return 0
    except (ConfigError, CheckpointError, FileNotFoundError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        print("interrupted; continue with the same command plus --resume", file=sys.stderr)
        return 130


__all__ = [
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "apply_overrides",
    "build_classifier",
    "build_parser",
    "coerce",
    "load_config",
    "main",
    "read_config_file",
]
