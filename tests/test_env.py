from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from course_lib import env


@pytest.mark.parametrize(
    "value, expected", [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)]
)
def test_fast_mode_reads_one_variable(monkeypatch, value, expected):
    monkeypatch.setenv(env.FAST_ENV, value)
    assert env.fast_mode() is expected
    assert env.pick("fast", "full") == ("fast" if expected else "full")


def test_learner_mode_is_the_default(monkeypatch):
    monkeypatch.delenv(env.FAST_ENV, raising=False)
    assert env.fast_mode() is False


def test_choose_device_always_returns_a_device_and_a_reason(monkeypatch):
    monkeypatch.delenv(env.DEVICE_ENV, raising=False)
    choice = env.choose_device()
    assert isinstance(choice.device, torch.device) and choice.reason
    expected = "cuda" if torch.cuda.is_available() else ("mps" if env._mps_available() else "cpu")
    assert choice.device.type == expected


def test_choose_device_falls_back_to_cpu_without_accelerators(monkeypatch):
    monkeypatch.delenv(env.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(env, "_mps_available", lambda: False)
    choice = env.choose_device()
    assert choice.device == torch.device("cpu") and "CPU" in choice.reason


def test_asking_for_a_missing_gpu_says_how_to_fix_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="COURSE_DEVICE"):
        env.choose_device("cuda")
    monkeypatch.setenv(env.DEVICE_ENV, "cpu")
    assert env.get_device() == torch.device("cpu")


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    env.seed_everything(7)
    a = draw()
    env.seed_everything(7)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_cache_dir_is_outside_the_repo_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv(env.CACHE_ENV, raising=False)
    default = env.cache_dir()
    repo = __import__("pathlib").Path(__file__).resolve().parent.parent
    assert repo not in default.resolve().parents
    monkeypatch.setenv(env.CACHE_ENV, str(tmp_path / "c"))
    sub = env.cache_dir("checkpoints", "run1")
    assert sub == tmp_path / "c" / "checkpoints" / "run1" and sub.is_dir()
