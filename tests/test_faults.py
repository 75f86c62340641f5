"""Faults, as a user and an attacker meet them: no run lost, no silent wrong result, no code run from a file.

Each test reproduces one failure seen on the code before these fixes (it failed there) and checks the fix:
signals (a real SIGTERM, SIGINT and SIGKILL against a training subprocess), the output folder (unwritable,
full, locked by a second run, stale locks and temporary files), checkpoints (NaN weights, bit flips, the
previous copy kept, another tokenizer), strict config types, the tokenizer `generate` decodes with, bundle
and ``.pt2`` loading, and the one-line ``error:`` messages of the command line.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import lm_config, lm_trainer, make_lm, token_stream, window_batches

import course_lib.checkpoint as checkpoint_module
from course_lib.checkpoint import CheckpointError, kept_path, load_checkpoint, save_checkpoint
from course_lib.cli import EXIT_CODES, main
from course_lib.deploy import (
    ARCHITECTURES,
    build_model,
    export_torch,
    load_exported,
    load_for_inference,
    predict_proba,
    save_for_inference,
)
from course_lib.gpt import GPT, GPTConfig
from course_lib.tokenizers import CharTokenizer, tokenizer_meta
from course_lib.trainer import Callback, NonFiniteLossError, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).with_name("trainer_helpers.py")
SUBPROCESS_TIMEOUT = 120  # seconds; a hung child fails the test instead of the whole run


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(HELPERS.parent), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _start(mode: str, out_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HELPERS), mode, str(out_dir)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen, word: str) -> None:
    for line in proc.stdout:  # blocks until the child prints the word
        if line.strip() == word:
            return
    raise AssertionError(f"the child ended before printing {word}: {proc.stderr.read()[-2000:]}")


def _dead_pid() -> int:
    """The id of a process that has ended (a stale lock's owner)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, trainer):
        self.steps += 1


# ---------------------------------------------------------------------------------------------- signals


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    """SIGTERM (preemption, docker stop) used to kill the run with nothing saved since the last save."""
    proc = _start("signal", tmp_path)
    try:
        _wait_for(proc, "TRAINING")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 143 == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupt (SIGTERM)" in out and "saved step" in out
    step = load_checkpoint(tmp_path / "last.pt")["step"]
    assert step >= 3 and not (tmp_path / ".lock").exists()  # the lock goes with the run
    trainer = lm_trainer(tmp_path, "callable", resume=True, max_steps=step + 2, eval_every=10**6)
    trainer.fit()
    assert trainer.step == step + 2


@pytest.mark.slow
def test_a_second_run_on_the_same_out_dir_is_refused(tmp_path):
    """Two runs on one out_dir used to overwrite each other's last.pt, both exiting 0."""
    proc = _start("signal", tmp_path)
    try:
        _wait_for(proc, "TRAINING")
        second = lm_trainer(tmp_path, "callable", callbacks=[counter := CountSteps()])
        with pytest.raises(CheckpointError, match=rf"in use by another training run \(process {proc.pid}\)"):
            second.fit()
        assert counter.steps == 0 and not (tmp_path / "last.pt").exists()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the same save, the shell's code for SIGINT
        proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert load_checkpoint(tmp_path / "last.pt")["step"] >= 3


@pytest.mark.slow
def test_sigkill_during_a_save_loses_nothing_and_leaves_nothing_behind(tmp_path):
    """A SIGKILL inside a save keeps the previous last.pt; its temp file and stale lock are cleaned up."""
    proc = _start("killsave", tmp_path)
    try:
        _wait_for(proc, "SAVING")  # the step-4 checkpoint is written but not yet renamed into place
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=SUBPROCESS_TIMEOUT)
    finally:
        proc.kill()
    leftovers = sorted(p.name for p in tmp_path.glob(".last.pt.tmp-*"))
    assert leftovers == [f".last.pt.tmp-{proc.pid}"]  # what a killed writer leaves
    assert (tmp_path / ".lock").read_text().split()[1] == str(proc.pid)  # a lock whose owner is dead
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2  # checksum verified

    trainer = lm_trainer(tmp_path, "callable", resume=True, max_steps=4, save_every=2)
    assert trainer.step == 2
    trainer.fit()  # takes over the stale lock
    assert not list(tmp_path.glob(".*.tmp-*")) and not (tmp_path / ".lock").exists()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4


# ---------------------------------------------------------------------------------------------- out_dir


@pytest.mark.parametrize("kind", ["unwritable", "a file"])
def test_an_unusable_out_dir_fails_before_step_1(tmp_path, kind):
    """save_every=None used to train to the end and then crash on the only save."""
    out_dir = "/proc/no-such-run/out" if kind == "unwritable" else tmp_path / "taken"
    if kind == "a file":
        out_dir.write_text("not a folder")
    trainer = lm_trainer(out_dir, "callable", callbacks=[counter := CountSteps()], save_every=None)
    with pytest.raises(OSError, match=r"cannot write checkpoints to out_dir .*set train.out_dir"):
        trainer.fit()
    assert counter.steps == 0


def test_a_full_disk_fails_before_step_1(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    trainer = lm_trainer(tmp_path, "callable", callbacks=[counter := CountSteps()])
    with pytest.raises(OSError, match=r"0.0 MiB free but one checkpoint needs about .* MiB; free some space"):
        trainer.fit()
    assert counter.steps == 0


def test_disk_full_during_a_save_names_the_cause_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save reported ENOSPC as 'unexpected pos ...' with the real cause buried under it."""
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(4)}, "step": 1}, path)
    before = path.read_bytes()

    class FullDisk(io.FileIO):
        written = 0

        def write(self, b):
            FullDisk.written += len(b)
            if FullDisk.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(b)

    monkeypatch.setattr(checkpoint_module, "open", lambda p, mode: FullDisk(p, mode), raising=False)
    with pytest.raises(OSError, match=r"No space left on device while writing .*untouched") as info:
        save_checkpoint({"model": {"w": torch.zeros(10_000)}, "step": 2}, path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_stale_locks_are_taken_over_and_foreign_ones_refused(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(f"{socket.gethostname()} {_dead_pid()} 2026-01-01T00:00:00\n")
    lm_trainer(tmp_path, "callable", max_steps=2).fit()  # the owner is gone: the lock is stale
    assert not lock.exists()
    lock.write_text("another-machine 4242 2026-01-01T00:00:00\n")  # cannot tell from here: refuse, say how
    with pytest.raises(CheckpointError, match=r"locked by process 4242 on another-machine.*delete .*\.lock"):
        lm_trainer(tmp_path, "callable", max_steps=2).fit()


def test_temporary_files_of_killed_writers_are_removed(tmp_path):
    dead = tmp_path / f".last.pt.tmp-{_dead_pid()}"
    alive = tmp_path / f".other.pt.tmp-{os.getppid()}"  # a writer that still runs keeps its file
    dead.write_bytes(b"x" * 1000)
    alive.write_bytes(b"x")
    save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "last.pt")
    assert not dead.exists() and alive.exists()


# ---------------------------------------------------------------------------------------------- checkpoints


def test_nan_weights_after_a_finite_loss_never_reach_a_checkpoint(tmp_path):
    """The NaN guard looked at the loss before the last update, not at the weights it then saved."""

    class Overflow(Callback):  # the update of step 4 overflows although its loss was finite
        def on_step_end(self, trainer):
            if trainer.step == 4:
                with torch.no_grad():
                    trainer.model.fc.weight[0, 0] = float("inf")

    trainer = lm_trainer(tmp_path, "callable", callbacks=[Overflow()], save_every=2, eval_every=10**6)
    with pytest.raises(NonFiniteLossError, match=r"weights \['fc.weight'\] hold NaN/inf.*untouched"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_lr_1e3_leaves_a_last_pt_whose_weights_give_a_finite_loss(tmp_path):
    """The issue's run: lr=1e3 stopped with a clear message, but the last.pt it called the last good one
    held (finite) weights that gave the NaN. That file must be moved aside and the save before restored."""
    trainer = lm_trainer(tmp_path, "callable", lr=1e3, min_lr=1e2, warmup_steps=0, grad_clip=None,
                         save_every=1, max_steps=40, eval_every=10**6)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"last.pt of step \d+ held the weights that gave") as info:
        trainer.fit()
    bad_step = int(re.search(r"of step (\d+) held", str(info.value))[1])
    x, y = window_batches(token_stream())(0, torch.Generator().manual_seed(0))

    def loss_of(path: Path) -> float:
        model = make_lm()
        model.load_state_dict(load_checkpoint(path)["model"])
        with torch.no_grad():
            return float(model.eval()(x, y)[1])

    assert load_checkpoint(tmp_path / "last.nonfinite.pt")["step"] == bad_step
    assert not np.isfinite(loss_of(tmp_path / "last.nonfinite.pt"))  # the weights that gave the NaN
    assert load_checkpoint(tmp_path / "last.pt")["step"] == bad_step - 1
    assert np.isfinite(loss_of(tmp_path / "last.pt"))


@pytest.mark.parametrize("keep_last", [2, 3])
def test_previous_checkpoints_are_kept(tmp_path, keep_last):
    lm_trainer(tmp_path, "callable", max_steps=6, save_every=2, keep_last=keep_last).fit()
    last = tmp_path / "last.pt"
    steps = [load_checkpoint(kept_path(last, i) if i else last)["step"] for i in range(keep_last)]
    assert steps == [6, 4, 2][:keep_last]
    assert not kept_path(last, keep_last).exists()


def _flip_a_bit_in_the_largest_tensor(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw, h = bytearray(path.read_bytes()), info.header_offset  # h: where the entry's local header starts
    name_len = int.from_bytes(raw[h + 26 : h + 28], "little")
    extra_len = int.from_bytes(raw[h + 28 : h + 30], "little")
    start = h + 30 + name_len + extra_len  # the tensor's bytes in the (uncompressed) zip
    raw[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_a_bit_flipped_checkpoint_is_refused_and_the_previous_one_named(tmp_path):
    """A flipped bit used to resume silently (loss 125.9 instead of 3.6) and then overwrite itself."""
    lm_trainer(tmp_path, "callable", max_steps=4, save_every=2).fit()
    _flip_a_bit_in_the_largest_tensor(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"fails its checksum.*resume from last.1.pt"):
        lm_trainer(tmp_path, "callable", resume=True, max_steps=6)
    assert lm_trainer(tmp_path, "callable", resume=tmp_path / "last.1.pt", max_steps=6).step == 2


def test_a_corrupt_best_pt_gives_advice_that_works(tmp_path):
    """The old message told the user to resume from best.pt, the very file that was broken."""
    lm_trainer(tmp_path, "callable", max_steps=4, eval_every=2, early_stopping_patience=5).fit()
    best = tmp_path / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"Delete .*best.pt to resume without them"):
        lm_trainer(tmp_path, "callable", resume=True, max_steps=6, early_stopping_patience=5)
    best.unlink()
    trainer = lm_trainer(tmp_path, "callable", resume=True, max_steps=6, early_stopping_patience=5)
    trainer.fit()
    assert trainer.step == 6


def test_resuming_under_another_tokenizer_is_refused(tmp_path):
    data = window_batches(token_stream())
    Trainer(make_lm(), lm_config(tmp_path, max_steps=2), data, meta={"tokenizer_fingerprint": "aaaa"}).fit()
    with pytest.raises(CheckpointError, match=r"another tokenizer .*aaaa vs bbbb"):
        Trainer(make_lm(), lm_config(tmp_path, max_steps=4), data, resume=True,
                meta={"tokenizer_fingerprint": "bbbb"})  # fmt: skip


# ---------------------------------------------------------------------------------------------- config types


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"grad_clip": -1.0}, r"grad_clip must be a finite number >= 0.*turn the gradient round"),
        ({"compile": "no"}, r"compile must be true or false, got 'no'"),
        ({"progress": 1}, r"progress must be true or false"),
        ({"out_dir": ""}, r"out_dir is empty"),
        ({"max_steps": True}, r"max_steps must be an integer"),
        ({"max_steps": "10"}, r"max_steps must be an integer"),
        ({"lr": float("inf")}, r"lr must be > 0"),
        ({"weight_decay": float("nan")}, r"weight_decay must be a finite number"),
        ({"keep_last": 0}, r"keep_last must be an integer >= 1"),
        ({"save_every": 2.5}, r"save_every must be an integer or None"),
    ],
)
def test_config_values_of_the_wrong_type_or_range_are_refused(bad, message):
    """grad_clip=-1 did gradient ascent (val loss 5.71 -> 8.90, exit 0); "no" switched compile on."""
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(bad)


def test_config_numbers_are_normalised():
    cfg = TrainConfig(lr=1, max_steps=np.int64(5), grad_clip=0, out_dir=Path("/tmp/x"))
    assert type(cfg.lr) is float and type(cfg.max_steps) is int and cfg.out_dir == "/tmp/x"


def test_a_config_file_with_a_string_boolean_is_an_error_line(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train": {"compile": "no"}}))
    assert main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [train] TrainConfig.compile must be true or false")
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------- generate


@pytest.fixture
def lm_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A tiny pretrain checkpoint whose tokenizer file lies at a path stored in its meta."""
    tok = CharTokenizer.train("abcdefgh ")
    tok_path = tok.save(tmp_path / "tokenizer.json")
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, d_model=16)
    meta = {"kind": "pretrain", "model_config": cfg.to_dict(), **tokenizer_meta(tok, tok_path)}
    path = save_checkpoint({"model": GPT(cfg).state_dict(), "meta": meta}, tmp_path / "lm.pt")
    return path, tok_path


def _generate(path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    args = ["generate", "--checkpoint", str(path), "--prompt", "abc", "--temperature", "0", "--device", "cpu"]
    status = main([*args, "--max-new-tokens", "12", *extra])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_generate_decodes_with_the_tokenizer_stored_in_the_checkpoint(lm_checkpoint, capsys):
    """A swapped tokenizer file (same size) used to give garbage with exit 0."""
    path, tok_path = lm_checkpoint
    status, before, _ = _generate(path, capsys)
    assert status == 0 and before.startswith("abc")
    CharTokenizer(list("hgfedcba ")).save(tok_path)  # the same vocabulary size, other ids
    status, after, _ = _generate(path, capsys)
    assert status == 0 and after == before


def test_generate_refuses_a_tokenizer_copy_that_fails_its_fingerprint(lm_checkpoint, capsys):
    path, _ = lm_checkpoint
    ckpt = load_checkpoint(path)
    ckpt["meta"]["tokenizer_fingerprint"] = "0" * 16
    save_checkpoint(ckpt, path)
    status, out, err = _generate(path, capsys)
    assert status == 1 and out == ""
    assert err.startswith("error: ") and "fingerprint" in err and "Traceback" not in err


def test_generate_refuses_a_negative_token_count(lm_checkpoint, capsys):
    status, out, err = _generate(lm_checkpoint[0], capsys, "--max-new-tokens", "-5")
    assert status == 2 and err.startswith("error: --max-new-tokens must be >= 1")


# ---------------------------------------------------------------------------------------------- bundles


def _mlp_bundle(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = {"architecture": "MLP", "kwargs": {"sizes": [64, 16, 10]}, "labels": [str(d) for d in range(10)]}
    return save_for_inference(build_model(config), tmp_path / "digits", config)


def _text_bundle(tmp_path: Path) -> Path:
    tok = CharTokenizer.train("abcdefgh ").save(tmp_path / "tok.json")
    gpt = {"vocab_size": 10, "block_size": 8, "n_layer": 1, "n_head": 1, "d_model": 8}
    config = {"architecture": "GPTClassifier", "kwargs": {"gpt": gpt, "n_classes": 2}, "labels": ["a", "b"]}
    return save_for_inference(build_model(config), tmp_path / "text", config, tokenizer_path=tok)


def _edit_config(bundle: Path, **changes) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config.update(changes)
    (bundle / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("name", ["../outside.json", "ABSOLUTE", "link.json"])
def test_bundle_members_stay_inside_the_bundle(tmp_path, name):
    """A config naming ../../../../etc/passwd (or an absolute path) read files outside the bundle."""
    bundle = _text_bundle(tmp_path)
    outside = CharTokenizer.train("abcdefgh ").save(tmp_path / "outside.json")  # a valid file, outside
    if name == "ABSOLUTE":
        name = str(outside)
    if name == "link.json":
        (bundle / name).symlink_to(outside)
    _edit_config(bundle, tokenizer=name)
    with pytest.raises(ValueError, match=r"inside the bundle|outside the bundle"):
        load_for_inference(bundle, device="cpu")


def test_bundle_sizes_are_checked_before_any_memory_is_allocated(tmp_path, monkeypatch):
    """d_model=32768 in a bundle's kwargs used to allocate gigabytes before any weight was checked."""
    built_on = []

    def gpt_on_meta_only(kw):  # fails the moment a model would be built with real memory
        built_on.append(torch.empty(0).device.type)
        assert built_on[-1] == "meta", "a model was built on a real device before the weights were checked"
        return ARCHITECTURES["GPT"](kw)

    monkeypatch.setitem(ARCHITECTURES, "BigGPT", gpt_on_meta_only)
    bundle = _mlp_bundle(tmp_path)
    big = {"vocab_size": 10, "block_size": 8, "n_layer": 1, "n_head": 1, "d_model": 32768}  # 12.9e9 weights
    _edit_config(bundle, architecture="BigGPT", kwargs=big)
    with pytest.raises(CheckpointError, match=r"does not describe the weights in model.pt"):
        load_for_inference(bundle, device="cpu")
    assert built_on == ["meta"]
    _edit_config(bundle, architecture="MLP", kwargs={"sizes": [64, 2**21, 10]})
    with pytest.raises(ValueError, match=r"sizes \['sizes.1=2097152'\], above the limit"):
        load_for_inference(bundle, device="cpu")


def test_nan_weights_and_nan_inputs_are_errors_not_nan_probabilities(tmp_path):
    bundle = _mlp_bundle(tmp_path)
    loaded = load_for_inference(bundle, device="cpu")
    x = torch.rand(3, 64)
    x[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"inputs \[1\] hold NaN"):
        predict_proba(loaded, x)
    state = torch.load(bundle / "model.pt", weights_only=True)
    state["layers.0.weight"][0, 0] = float("nan")
    torch.save(state, bundle / "model.pt")
    with pytest.raises(ValueError, match=r"NaN or infinite weights in \['layers.0.weight'\]"):
        load_for_inference(bundle, device="cpu")


def _damage(kind: str, bundle: Path, tmp_path: Path) -> list[str]:
    """Break the bundle or its inputs one way; returns the predict inputs."""
    good = tmp_path / "ok.npy"
    np.save(good, np.zeros((8, 8), dtype=np.float32))
    if kind == "truncated model.pt":
        data = (bundle / "model.pt").read_bytes()
        (bundle / "model.pt").write_bytes(data[: len(data) // 2])
    elif kind == "bad config.json":
        (bundle / "config.json").write_text('{"format": "course_lib.deploy/1", "architecture": ')
    elif kind == "NaN weights":
        state = torch.load(bundle / "model.pt", weights_only=True)
        state["layers.0.weight"][0] = float("nan")
        torch.save(state, bundle / "model.pt")
    elif kind == "empty image":
        (tmp_path / "empty.png").write_bytes(b"")
        return [str(tmp_path / "empty.png")]
    elif kind == "binary image":
        (tmp_path / "noise.png").write_bytes(os.urandom(300))
        return [str(tmp_path / "noise.png")]
    elif kind == "binary .npy":
        (tmp_path / "noise.npy").write_bytes(os.urandom(300))
        return [str(tmp_path / "noise.npy")]
    elif kind == "NaN image":
        np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan, dtype=np.float32))
        return [str(tmp_path / "nan.npy")]
    elif kind == "text for an image model":
        return ["a sentence, not an image"]
    return [str(good)]


@pytest.mark.parametrize(
    "kind",
    ["truncated model.pt", "bad config.json", "NaN weights", "empty image", "binary image", "binary .npy",
     "NaN image", "text for an image model"],
)  # fmt: skip
def test_predict_errors_are_one_error_line(tmp_path, capsys, kind):
    """predict caught nothing: each of these ended in a traceback (or printed nan with exit 0)."""
    bundle = _mlp_bundle(tmp_path)
    inputs = _damage(kind, bundle, tmp_path)
    status = main(["predict", str(bundle), *inputs, "--device", "cpu"])
    out = capsys.readouterr()
    assert status == 1 and "nan" not in out.out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err


# ---------------------------------------------------------------------------------------------- .pt2 files


def test_load_exported_opens_only_files_the_caller_trusts(tmp_path, monkeypatch):
    """torch.export.load unpickles with weights_only=False: a crafted .pt2 ran code when opened."""
    torch.manual_seed(0)
    model = build_model({"architecture": "MLP", "kwargs": {"sizes": [4, 3]}}).eval()
    path = export_torch(model, torch.randn(2, 4), tmp_path / "m.pt2")
    opened = []
    real_load = torch.export.load
    monkeypatch.setattr(torch.export, "load", lambda f, **kw: opened.append(f) or real_load(f, **kw))
    with pytest.raises(PermissionError, match=r"can run code.*load_exported\(path, trusted=True\)"):
        load_exported(path)
    assert opened == []  # refused before the file was read
    x = torch.randn(5, 4)
    torch.testing.assert_close(load_exported(path, trusted=True)(x), model(x), atol=1e-6, rtol=0)


def test_torch_floor_excludes_the_weights_only_bypass():
    """CVE-2025-32434: weights_only=True is bypassable in torch <= 2.5.1."""
    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert floor and (int(floor[1]), int(floor[2])) >= (2, 6)
    assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 6)


# ---------------------------------------------------------------------------------------------- command line


@pytest.fixture
def course_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_FAST", raising=False)
    return tmp_path / "cache"


def _pretrain(tmp_path: Path, *overrides: str) -> list[str]:
    return ["pretrain", "--set", "data.tokenizer=char", "data.max_docs=20", "model.n_layer=1",
            "train.max_steps=1", "train.device=cpu", "train.progress=false",
            f"train.out_dir={tmp_path / 'run'}", *overrides]  # fmt: skip


def test_a_truncated_cached_tokenizer_is_an_error_line(tmp_path, course_cache, capsys):
    cached = course_cache / "tokenizers" / "bbc_news-char-20.json"
    cached.parent.mkdir(parents=True)
    cached.write_text('{"format": "course_lib.char", "version": 1, "special_tokens": ["<u')
    assert main(_pretrain(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cached} is not a readable tokenizer") and "delete it" in err


@pytest.mark.slow
def test_a_huge_batch_is_an_out_of_memory_error_line(tmp_path, course_cache, capsys):
    assert main(_pretrain(tmp_path, f"train.batch_size={2**40}")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "train.batch_size" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_cli_resume_under_another_tokenizer_of_the_same_size_is_refused(tmp_path, course_cache, capsys):
    """The cached tokenizer was retrained (same size, other ids): --resume used to carry on with it."""
    assert main(_pretrain(tmp_path)) == 0
    cached = course_cache / "tokenizers" / "bbc_news-char-20.json"
    tok = CharTokenizer.load(cached)
    chars = tok.itos[len(tok.special_tokens) :]
    CharTokenizer(chars[::-1], tok.special_tokens).save(cached)  # the same vocabulary size, other ids
    capsys.readouterr()
    assert main([*_pretrain(tmp_path, "train.max_steps=2"), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "another tokenizer" in err and "Traceback" not in err


def test_exit_codes_are_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for code in EXIT_CODES:
        assert re.search(rf"^\| `{code}` \|", readme, re.M), f"exit code {code} missing from README.md"
    assert "what is kept" in readme.lower()
