"""Checkpoints: atomic writes, clear errors for bad files and shapes, exact resume in a new process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from trainer_helpers import StopAt, TinyLM, lm_trainer, params_of

from course_lib.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_model_state,
    restore_rng_state,
    save_checkpoint,
)

HELPERS = Path(__file__).with_name("trainer_helpers.py")
SUBPROCESS_TIMEOUT = 120  # seconds; a hung child fails the test instead of the whole run


def _env() -> dict[str, str]:
    # the same thread count as this process: a different one changes float summation order, not the maths
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(HELPERS.parent), env.get("PYTHONPATH", "")])
    return env


# ---------------------------------------------------------------------------------------------- atomic writes


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, path)
    save_checkpoint({"model": {"w": torch.zeros(2)}, "step": 2}, path)
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_failed_write_keeps_the_old_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, path)
    before = path.read_bytes()

    def half_write(obj, f):  # the disk fills up, or the process dies, half-way through
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "step": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


# ---------------------------------------------------------------------------------------------- bad files


def test_truncated_and_garbage_files_give_a_clear_error(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"model": TinyLM().state_dict(), "step": 3}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    for bad in (cut, junk):
        with pytest.raises(CheckpointError, match=r"not a readable checkpoint.*corrupt.*(Delete|start)"):
            load_checkpoint(bad)


def test_missing_file_and_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(1)}, foreign)
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_checkpoint(foreign)


def test_a_model_of_another_shape_gets_an_error_naming_the_keys():
    small, wide = TinyLM(d=16), TinyLM(d=32)
    with pytest.raises(
        CheckpointError, match=r"shape mismatches \[fc\.bias: checkpoint \(32,\) vs model \(64,\)"
    ):
        load_model_state(wide, small.state_dict())
    state = small.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["ln.bias"]
    with pytest.raises(
        CheckpointError, match=r"missing keys \['ln\.bias'\].*unexpected keys \['extra\.weight'\]"
    ):
        load_model_state(TinyLM(d=16), state)


def test_wrapper_prefixes_are_ignored():
    src, dst = TinyLM(), TinyLM()
    state = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}  # DDP around torch.compile
    load_model_state(dst, state)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_trainer_resume_into_a_different_model_names_the_keys(tmp_path):
    trainer = lm_trainer(tmp_path, "callable", max_steps=2)
    trainer.fit()
    from course_lib.trainer import Trainer

    other = Trainer(nn.Linear(2, 2), trainer.config, lambda step, g: (torch.zeros(1, 2), torch.zeros(1, 2)))
    with pytest.raises(CheckpointError, match=r"missing keys \['bias', 'weight'\].*unexpected keys"):
        other.resume()


# ---------------------------------------------------------------------------------------------- RNG


def test_rng_state_round_trip_replays_every_generator():
    g = torch.Generator().manual_seed(5)
    state = capture_rng_state(g)

    def draw():
        return (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())

    first = draw()
    restore_rng_state(state, g)
    assert draw() == first


# ---------------------------------------------------------------------------------------------- exact resume


@pytest.mark.slow
@pytest.mark.parametrize("data_kind", ["callable", "dataset"])
def test_resume_in_a_new_process_gives_identical_parameters(tmp_path, data_kind):
    """2N steps straight == N steps, checkpoint, a new Python process resumes, N more steps (torch.equal)."""
    n = 6  # the Dataset case has 6 batches per epoch, so the resumed run starts a new epoch mid-way
    straight = lm_trainer(tmp_path / "straight", data_kind, max_steps=2 * n)
    straight.fit()

    first_half = lm_trainer(tmp_path / "split", data_kind, callbacks=[StopAt(n)], max_steps=2 * n)
    first_half.fit()
    assert load_checkpoint(first_half.last_path)["step"] == n

    result = tmp_path / "resumed.pt"
    cmd = [
        sys.executable,
        str(HELPERS),
        "resume",
        str(tmp_path / "split"),
        str(2 * n),
        data_kind,
        str(result),
    ]
    subprocess.run(cmd, check=True, env=_env(), timeout=SUBPROCESS_TIMEOUT, capture_output=True)
    resumed = torch.load(result, weights_only=True)

    for k, v in params_of(straight.model).items():
        assert torch.equal(resumed["params"][k], v), k
    losses = [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in straight.history]
    assert [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in resumed["history"]] == losses


# ---------------------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS), "sigint", str(tmp_path)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:  # blocks until step 3 is done
            if line.strip() == "TRAINING":
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "TrainingInterrupted: SIGINT" in err  # a KeyboardInterrupt subclass
    assert "saved step" in out
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] >= 3

    trainer = lm_trainer(tmp_path, "callable", resume=True, max_steps=ckpt["step"] + 2, eval_every=10**6)
    assert trainer.step == ckpt["step"]
    trainer.fit()
    assert trainer.step == ckpt["step"] + 2
