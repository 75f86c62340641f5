"""The command line: config files, --set overrides and their errors, and pretrain -> generate end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib.checkpoint import load_checkpoint
from course_lib.cli import main
from course_lib.config import ConfigError, FinetuneConfig, coerce, load_config
from course_lib.runs import build_classifier

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CLI_TIMEOUT = 180  # seconds for one subprocess run, start-up included


# ---------------------------------------------------------------------------------------------- --set values


@pytest.mark.parametrize(
    "text, tp, expected",
    [
        ("20", int, 20),
        ("1e3", int, 1000),
        ("3e-4", float, 3e-4),
        ("false", bool, False),
        ("Yes", bool, True),
        ("none", int | None, None),
        ("5", int | None, 5),
        ("0.8,0.95", tuple[float, float], (0.8, 0.95)),
        ("[0.8, 0.95]", tuple[float, float], (0.8, 0.95)),
        ("qkv,proj", list[str], ["qkv", "proj"]),
        ("bf16", str, "bf16"),
    ],
)
def test_coerce_converts_to_the_field_type(text, tp, expected):
    value = coerce(text, tp, "section.key")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text, tp", [("2.5", int), ("fast", bool), ("abc", float), ("x", int | None)])
def test_coerce_rejects_values_of_the_wrong_type(text, tp):
    with pytest.raises(ConfigError, match="section.key"):
        coerce(text, tp, "section.key")


# ---------------------------------------------------------------------------------------------- config files


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.*")), ids=lambda p: p.name)
def test_every_shipped_config_loads_in_both_modes(path, monkeypatch):
    command = "finetune" if "finetune" in path.name else "pretrain"
    for fast in ("0", "1"):
        monkeypatch.setenv("COURSE_FAST", fast)
        config = load_config(command, path)
        assert config["train"]["max_steps"] >= 1


def test_fast_section_applies_only_in_fast_mode_and_set_wins(monkeypatch):
    path = CONFIGS / "pretrain_tiny.json"
    monkeypatch.setenv("COURSE_FAST", "0")
    assert load_config("pretrain", path)["train"]["max_steps"] == 500
    monkeypatch.setenv("COURSE_FAST", "1")
    assert load_config("pretrain", path)["train"]["max_steps"] == 10
    assert load_config("pretrain", path, ["train.max_steps=3"])["train"]["max_steps"] == 3


def test_toml_and_json_give_the_same_config(tmp_path):
    data = {"train": {"max_steps": 7, "lr": 0.001, "betas": [0.8, 0.9]}, "model": {"name": "tiny"}}
    (tmp_path / "c.json").write_text(json.dumps(data))
    (tmp_path / "c.toml").write_text(
        '[train]\nmax_steps = 7\nlr = 0.001\nbetas = [0.8, 0.9]\n[model]\nname = "tiny"\n'
    )
    assert load_config("pretrain", tmp_path / "c.json") == load_config("pretrain", tmp_path / "c.toml")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["train.max_step=3"],
            r"unknown config key 'train.max_step'; valid keys in \[train\] are: .*max_steps",
        ),
        (["model.n_layers=3"], r"unknown config key 'model.n_layers'; valid keys in \[model\].*n_layer"),
        (["optim.lr=3"], r"unknown config key 'optim.lr'.*section one of data, model, train"),
        (["train.max_steps"], r"--set takes section.key=value pairs"),
        (["train.lr=fast"], r"train.lr takes a number"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("pretrain", CONFIGS / "pretrain_tiny.json", overrides)


def test_unknown_keys_and_sections_in_a_file(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"train": {"epochs": 3}}))
    with pytest.raises(ConfigError, match=r"\['train.epochs'\]"):
        load_config("pretrain", tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"optimizer": {}}))
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['optimizer'\]"):
        load_config("pretrain", tmp_path / "b.json")
    (tmp_path / "c.yaml").write_text("train: {}")
    with pytest.raises(ConfigError, match=r"\.json or \.toml"):
        load_config("pretrain", tmp_path / "c.yaml")


def test_main_reports_config_errors_with_exit_status_2(capsys):
    assert (
        main(["pretrain", "--config", str(CONFIGS / "pretrain_tiny.json"), "--set", "train.max_step=3"]) == 2
    )
    assert "unknown config key 'train.max_step'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ fine-tuning modes


@pytest.mark.parametrize(
    "mode, trainable",
    [
        ("head", {"head"}),
        ("last_n", {"head", "gpt.transformer.h.1", "gpt.transformer.ln_f"}),
        ("full", None),
        ("lora", {"head", "lora"}),
    ],
)
def test_finetune_modes_train_the_right_parameters(mode, trainable):
    from course_lib.gpt import GPTConfig

    cfg = GPTConfig(vocab_size=40, block_size=8, n_layer=2, n_head=2, d_model=16)
    clf = build_classifier(cfg, 3, FinetuneConfig(mode=mode, last_n=1), state=None)
    names = [n for n, p in clf.named_parameters() if p.requires_grad]
    if trainable is None:
        assert len(names) == len(list(clf.parameters()))
        return
    assert names
    for n in names:
        assert any(n.startswith(t) or (t == "lora" and ".lora_" in n) for t in trainable), n
    assert not any(n.startswith("gpt.transformer.h.0") and ".lora_" not in n for n in names)


# ---------------------------------------------------------------------------------------------- end to end


def _run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COURSE_FAST="1", COURSE_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "course_lib", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("cli-cache")
    proc = _run(["pretrain", "--config", "configs/pretrain_tiny.json", "--set", "model.n_layer=1"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("checkpoint: ")][-1]
    return Path(line.removeprefix("checkpoint: ")), cache


@pytest.mark.slow
def test_pretrain_writes_a_checkpoint(pretrained):
    path, cache = pretrained
    assert path.is_relative_to(cache)  # artefacts go to the cache, never into the repository
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 10  # configs/pretrain_tiny.json's fast mode
    assert ckpt["meta"]["kind"] == "pretrain" and ckpt["meta"]["model_config"]["n_layer"] == 1
    assert ckpt["config"]["max_steps"] == 10 and len(ckpt["history"]) >= 2


@pytest.mark.slow
def test_generate_prints_a_continuation(pretrained):
    path, cache = pretrained
    proc = _run(["generate", "--checkpoint", str(path), "--prompt", "The", "--max-new-tokens", "8"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("The") and len(proc.stdout.strip()) > len("The")


@pytest.mark.slow
def test_finetune_from_the_pretrained_checkpoint(pretrained, monkeypatch, capsys):
    path, cache = pretrained
    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.setenv("COURSE_CACHE", str(cache))
    overrides = [f"finetune.checkpoint={path}", "finetune.mode=lora", "train.max_steps=2"]
    overrides.append(f"train.out_dir={cache / 'ft'}")
    status = main(["finetune", "--config", str(CONFIGS / "finetune_bbc.json"), "--set", *overrides])
    out = capsys.readouterr().out
    assert status == 0 and "macro avg" in out and "business" in out
    report = json.loads((cache / "ft" / "test_report.json").read_text())
    assert 0.0 <= report["accuracy"] <= 1.0
    assert load_checkpoint(cache / "ft" / "last.pt")["meta"]["finetune"]["mode"] == "lora"


def test_generate_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "nope.pt")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err
