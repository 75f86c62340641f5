"""The Trainer's pieces checked against PyTorch's own schedulers, optimizers and a hand-written loop."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from trainer_helpers import (
    StopAt,
    TinyLM,
    TinyRegressor,
    lm_config,
    lm_trainer,
    params_of,
    regression_dataset,
    token_stream,
    window_batches,
)

from course_lib.checkpoint import load_checkpoint
from course_lib.gpt import GPT, GPTConfig
from course_lib.trainer import (
    Callback,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    count_items,
    default_loss,
    lr_at,
    param_groups,
    resolve_amp,
)

LR_TOL = 1e-12  # relative: the schedule is closed-form float64 arithmetic on both sides
PARAM_TOL = 1e-6  # absolute: same float32 ops, possibly summed in a different order


# ---------------------------------------------------------------------------------------------- config


def test_from_dict_rejects_an_unknown_key_naming_it_and_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown TrainConfig key\(s\) \['max_step'\].*valid keys.*max_steps"
    ):
        TrainConfig.from_dict({"max_step": 10})


def test_config_round_trips_through_a_plain_dict():
    cfg = TrainConfig(max_steps=7, betas=[0.8, 0.9], amp="off", early_stopping_patience=2)
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.betas == (0.8, 0.9)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lr": 0.0}, "lr must be > 0"),
        ({"min_lr": 1.0, "lr": 1e-3}, "min_lr must lie in"),
        ({"amp": "fp8"}, "amp must be one of"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"grad_accum_steps": 1.5}, "grad_accum_steps must be an integer"),
        ({"betas": (0.9, 1.0)}, "betas must be two numbers"),
        ({"early_stopping_patience": 0}, "early_stopping_patience must be a positive integer or None"),
    ],
)
def test_bad_config_values_name_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


# ---------------------------------------------------------------------------------------------- schedule


def _torch_lrs(scheduler_factory, base_lr: float, n: int) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = scheduler_factory(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("warmup, max_steps", [(10, 100), (1, 20), (25, 40)])
def test_warmup_matches_torch_linear_lr(warmup, max_steps):
    cfg = TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=warmup, max_steps=max_steps)
    # LinearLR's factor at step i is start + (end - start) * i / total_iters = (i + 1) / (W + 1) here.
    ref = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.LinearLR(
            opt,
            start_factor=1 / (warmup + 1),
            end_factor=warmup / (warmup + 1),
            total_iters=max(1, warmup - 1),
        ),
        cfg.lr,
        warmup,
    )
    ours = [lr_at(s, cfg) for s in range(warmup)]
    assert ours == pytest.approx(ref, rel=LR_TOL)


@pytest.mark.parametrize("warmup, max_steps, min_lr", [(10, 100, 1e-5), (0, 30, 0.0), (5, 12, 2e-4)])
def test_decay_matches_torch_cosine_annealing(warmup, max_steps, min_lr):
    cfg = TrainConfig(lr=1e-3, min_lr=min_lr, warmup_steps=warmup, max_steps=max_steps)
    span = max_steps - warmup
    ref = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=span, eta_min=min_lr),
        cfg.lr,
        span + 1,
    )
    ours = [lr_at(warmup + i, cfg) for i in range(span + 1)]
    assert ours == pytest.approx(ref, rel=1e-9)  # torch's recursive form accumulates ~1e-15 per step


def test_schedule_landmarks():
    cfg = TrainConfig(lr=6e-4, min_lr=6e-5, warmup_steps=10, max_steps=110)
    assert lr_at(9, cfg) == pytest.approx(6e-4 * 10 / 11, rel=LR_TOL)  # last warmup step
    assert lr_at(10, cfg) == pytest.approx(6e-4, rel=LR_TOL)  # peak
    assert lr_at(60, cfg) == pytest.approx((6e-4 + 6e-5) / 2, rel=LR_TOL)  # half-way down the cosine
    assert lr_at(110, cfg) == pytest.approx(6e-5, rel=LR_TOL)  # floor
    assert lr_at(10_000, cfg) == 6e-5  # after max_steps: stays at the floor


@settings(max_examples=60, deadline=None)
@given(
    warmup=st.integers(0, 50),
    extra=st.integers(1, 200),
    lr=st.floats(1e-6, 1.0),
    frac=st.floats(0.0, 1.0),
    step=st.integers(0, 400),
)
def test_schedule_stays_within_bounds_and_decays_monotonically(warmup, extra, lr, frac, step):
    cfg = TrainConfig(lr=lr, min_lr=lr * frac, warmup_steps=warmup, max_steps=warmup + extra)
    value = lr_at(step, cfg)
    assert 0 <= value <= lr * (1 + 1e-12)
    if step < cfg.max_steps:  # every step that is actually taken moves the weights
        assert value > 0
    if step >= warmup:
        assert value >= cfg.min_lr * (1 - 1e-12)
        assert lr_at(step + 1, cfg) <= value * (1 + 1e-12)
    else:
        assert lr_at(step + 1, cfg) >= value


# ---------------------------------------------------------------------------------------------- param groups


def _group_names(model: nn.Module, wd: float = 0.1) -> tuple[set[str], set[str]]:
    decay, no_decay = param_groups(model, wd)
    assert decay["weight_decay"] == wd and no_decay["weight_decay"] == 0.0
    return set(decay["param_names"]), set(no_decay["param_names"])


def test_param_groups_on_a_gpt_like_module():
    decay, no_decay = _group_names(TinyLM())
    assert decay == {"fc.weight", "proj.weight"}
    # the tied head weight *is* the token embedding: one parameter, in the no-decay group
    assert no_decay == {"wte.weight", "wpe.weight", "ln.weight", "ln.bias", "fc.bias", "proj.bias"} | {
        "ln_f.weight",
        "ln_f.bias",
    }


def test_param_groups_on_transformers_gpt2_cover_every_parameter_once():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=16))
    decay, no_decay = _group_names(model)
    unique = {id(p) for p in model.parameters()}
    assert len(decay) + len(no_decay) == len(unique)  # lm_head.weight is tied: counted once
    assert all(n.endswith(".weight") and (".attn." in n or ".mlp." in n) for n in decay)
    assert {"transformer.wte.weight", "transformer.wpe.weight"} <= no_decay
    assert all(n.endswith("bias") or "ln_" in n or "wte" in n or "wpe" in n for n in no_decay)


def test_param_groups_on_the_course_gpt():
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, d_model=16))
    decay, no_decay = _group_names(model)
    embeddings = {n for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    assert all(n.rsplit(".", 1)[0] not in embeddings for n in decay)
    assert all(model.get_parameter(n).ndim == 2 for n in decay)
    assert len(decay) + len(no_decay) == len({id(p) for p in model.parameters()})


def test_param_groups_skip_frozen_parameters_and_refuse_a_fully_frozen_model():
    model = TinyRegressor()
    model.net[0].requires_grad_(False)
    decay, no_decay = _group_names(model)
    assert decay == {"net.2.weight"} and no_decay == {"net.2.bias"}
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, 0.1)


# ---------------------------------------------------------------------------------------------- amp


@pytest.mark.parametrize(
    "amp, device, bf16, dtype, scaler",
    [
        ("auto", "cuda", True, torch.bfloat16, False),
        ("auto", "cuda", False, torch.float16, True),
        ("fp16", "cuda", True, torch.float16, True),
        ("bf16", "cuda", True, torch.bfloat16, False),
        ("off", "cuda", True, None, False),
        ("auto", "cpu", None, None, False),
        ("bf16", "cpu", None, torch.bfloat16, False),
        ("off", "cpu", None, None, False),
        ("auto", "mps", None, None, False),
    ],
)
def test_resolve_amp(amp, device, bf16, dtype, scaler):
    plan = resolve_amp(amp, device, bf16_supported=bf16)
    assert (plan.dtype, plan.use_scaler) == (dtype, scaler) and plan.reason


@pytest.mark.parametrize(
    "amp, device, bf16, message",
    [
        ("bf16", "cuda", False, "no bf16 support"),
        ("fp16", "cpu", None, "not supported on the CPU"),
        ("x", "cpu", None, "one of"),
    ],
)
def test_resolve_amp_errors_say_what_to_use(amp, device, bf16, message):
    with pytest.raises(ValueError, match=message):
        resolve_amp(amp, device, bf16_supported=bf16)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    trainer = lm_trainer(tmp_path, "callable", amp="bf16", max_steps=4, eval_every=4)
    history = trainer.fit()
    assert trainer.amp.dtype is torch.bfloat16
    assert all(math.isfinite(r["train_loss"]) for r in history if "train_loss" in r)


# ---------------------------------------------------------------------------------------------- the loop


def _fixed_batches(n_steps: int, batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n_steps, batch, 4, generator=g)
    ys = torch.randn(n_steps, batch, generator=g)
    return lambda step, generator: (xs[step], ys[step])


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_trainer_steps_equal_a_hand_written_adamw_loop(tmp_path, grad_clip):
    """The Trainer's update is exactly: lr from lr_at, AdamW with the two groups, clip, step."""
    cfg = TrainConfig(
        max_steps=6, lr=1e-2, min_lr=1e-3, warmup_steps=2, grad_clip=grad_clip, device="cpu",
        progress=False, out_dir=str(tmp_path), log_every=3,
    )  # fmt: skip
    data = _fixed_batches(cfg.max_steps)
    torch.manual_seed(0)
    model = TinyRegressor()
    Trainer(model, cfg, data).fit()

    torch.manual_seed(0)
    ref = TinyRegressor()
    opt = torch.optim.AdamW(param_groups(ref, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    for step in range(cfg.max_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = data(step, None)
        F.mse_loss(ref.net(x).squeeze(-1), y).backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(ref.parameters(), grad_clip)
        opt.step()
        opt.zero_grad()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=PARAM_TOL, rtol=0, msg=name)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """batch 8 x 1 micro-step and batch 4 x 2 micro-steps see the same samples and the same mean gradient."""
    results = []
    for batch, accum in [(8, 1), (4, 2), (2, 4)]:
        torch.manual_seed(0)
        model = TinyRegressor()
        cfg = TrainConfig(
            max_steps=5, batch_size=batch, grad_accum_steps=accum, lr=1e-2, warmup_steps=1, device="cpu",
            progress=False, out_dir=str(tmp_path / f"{batch}"), log_every=5, seed=1,
        )  # fmt: skip
        trainer = Trainer(model, cfg, regression_dataset())
        trainer.fit()
        results.append((params_of(model), trainer.history[-1]["train_loss"]))
    for params, loss in results[1:]:
        for k in params:
            torch.testing.assert_close(params[k], results[0][0][k], atol=PARAM_TOL, rtol=0)
        assert loss == pytest.approx(results[0][1], abs=1e-6)


def test_history_records_loss_lr_and_token_throughput(tmp_path):
    trainer = lm_trainer(tmp_path, "callable", max_steps=8, log_every=2, eval_every=4)
    history = trainer.fit()
    assert [r["step"] for r in history] == [0, 2, 4, 6, 8]
    assert "val_loss" in history[0] and "train_loss" not in history[0]
    for r in history[1:]:
        assert r["tokens_per_s"] > 0 and r["lr"] == pytest.approx(lr_at(r["step"] - 1, trainer.config))
    assert history[-1]["train_loss"] < history[1]["train_loss"]  # it learns the counting pattern
    cols = trainer.history_columns()
    assert len(cols["step"]) == len(cols["val_loss"]) == 5 and math.isnan(cols["val_loss"][1])


def test_sample_throughput_for_float_batches_and_progress_bar(tmp_path, capsys):
    cfg = TrainConfig(
        max_steps=4, batch_size=8, device="cpu", out_dir=str(tmp_path), log_every=2, progress=True
    )
    trainer = Trainer(TinyRegressor(), cfg, regression_dataset())
    trainer.fit()
    assert all("samples_per_s" in r for r in trainer.history)
    err = capsys.readouterr().err
    assert "loss=" in err and "lr=" in err and "samples/s=" in err


@pytest.mark.parametrize(
    "batch, expected",
    [
        ((torch.zeros(4, 8, dtype=torch.long), torch.zeros(4, 8, dtype=torch.long)), (32, "tokens")),
        ({"input_ids": torch.zeros(2, 5, dtype=torch.long), "labels": torch.zeros(2)}, (10, "tokens")),
        ((torch.zeros(6, 3), torch.zeros(6)), (6, "samples")),
    ],
)
def test_count_items(batch, expected):
    assert count_items(batch) == expected


def test_default_loss_finds_the_loss_or_says_how_to_provide_it():
    x, y = torch.randn(3, 4), torch.randn(3)
    assert default_loss(TinyRegressor(), (x, y)).ndim == 0  # scalar output
    idx = torch.zeros(2, 8, dtype=torch.long)
    assert default_loss(TinyLM(), (idx, idx)).ndim == 0  # (logits, loss)
    with pytest.raises(TypeError, match="loss_fn="):
        default_loss(nn.Linear(4, 1), x)


def test_loss_fn_and_dataloader_input(tmp_path):
    data = regression_dataset()
    loader = DataLoader(data, batch_size=16, shuffle=True)
    model = nn.Linear(4, 1)
    seen = []

    def loss_fn(m, batch):
        seen.append(batch[0].shape[0])
        return F.mse_loss(m(batch[0]).squeeze(-1), batch[1])

    cfg = TrainConfig(max_steps=6, device="cpu", out_dir=str(tmp_path), progress=False, log_every=3)
    Trainer(model, cfg, loader, loss_fn=loss_fn).fit()
    assert seen == [16] * 6  # the loader's batch size, not TrainConfig.batch_size; epochs wrap around


@pytest.mark.parametrize(
    "data, message",
    [
        (DataLoader(regression_dataset(), batch_sampler=[[0, 1], [2, 3]]), "custom batch_sampler"),
        (type("Stream", (IterableDataset,), {"__iter__": lambda self: iter([])})(), "IterableDataset"),
        (42, "not supported"),
        (TensorDataset(torch.zeros(3, 4), torch.zeros(3)), "fewer than one batch"),
    ],
)
def test_unusable_training_data_is_refused_with_a_fix(tmp_path, data, message):
    cfg = TrainConfig(max_steps=2, batch_size=8, device="cpu", out_dir=str(tmp_path), progress=False)
    with pytest.raises((TypeError, ValueError), match=message):
        Trainer(TinyRegressor(), cfg, data)


def test_a_callback_can_stop_the_run(tmp_path):
    logged = []

    class Spy(Callback):
        def on_log(self, trainer, record):
            logged.append(record["step"])

    trainer = lm_trainer(tmp_path, "callable", callbacks=[StopAt(5), Spy()], max_steps=100, log_every=2)
    trainer.fit()
    assert trainer.step == 5 and logged == [0, 2, 4, 5]
    assert load_checkpoint(trainer.last_path)["step"] == 5


# --------------------------------------------------------------------------------------------- early stopping


def _diverging_run(tmp_path, max_steps: int, patience: int):
    """Train towards y = x while validating on y = -x: val loss rises from step 0, so step 0 is best.
    Returns the finished trainer and the model's initial parameters."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    train = TensorDataset(x, x.sum(-1))
    val = TensorDataset(x, -x.sum(-1))
    torch.manual_seed(0)
    model = TinyRegressor()
    initial = params_of(model)
    cfg = TrainConfig(
        max_steps=max_steps, batch_size=16, lr=1e-2, warmup_steps=0, eval_every=2, eval_steps=None,
        early_stopping_patience=patience, device="cpu", out_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    trainer = Trainer(model, cfg, train, val)
    trainer.fit()
    return trainer, initial


def test_early_stopping_restores_the_best_weights(tmp_path):
    trainer, initial = _diverging_run(tmp_path, max_steps=100, patience=3)
    assert trainer.step == 2 * 3  # three evaluations without improvement after the one at step 0
    assert trainer.best_step == 0
    vals = [r["val_loss"] for r in trainer.history if "val_loss" in r]
    assert vals == sorted(vals)  # it did get worse every time
    for k, v in params_of(trainer.model).items():
        assert torch.equal(v, initial[k]), k  # the best weights are back in the model
    assert load_checkpoint(trainer.best_path)["step"] == 0
    assert load_checkpoint(trainer.last_path)["step"] == 6  # last.pt keeps the final state for resuming


def test_early_stopping_puts_the_best_weights_back_even_when_the_run_reaches_max_steps(tmp_path):
    trainer, initial = _diverging_run(tmp_path, max_steps=4, patience=5)
    assert trainer.step == 4 and not trainer.should_stop  # patience never ran out
    assert trainer.best_step == 0
    for k, v in params_of(trainer.model).items():
        assert torch.equal(v, initial[k]), k


# ---------------------------------------------------------------------------------------------- NaN


def test_nan_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(tmp_path):
    stream = token_stream()
    clean = window_batches(stream)

    class NaNModel(TinyLM):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx.clamp(min=0), targets)
            return logits, (loss * float("nan") if (idx < 0).any() else loss)  # a -1 token poisons the loss

    def data(step, generator):
        x, y = clean(step, generator)
        if step == 5:  # step index 5, the 6th optimizer step
            x[0, 0] = -1
        return x, y

    hashes = {}

    class Hash(Callback):
        def on_step_end(self, trainer):
            if trainer.last_path.is_file():
                hashes[trainer.step] = hashlib.sha256(trainer.last_path.read_bytes()).hexdigest()

    torch.manual_seed(0)
    cfg = lm_config(tmp_path, max_steps=20, save_every=2, log_every=3)
    trainer = Trainer(NaNModel(), cfg, data, callbacks=[Hash()])
    with pytest.raises(NonFiniteLossError, match=r"step 6 .*lower lr.*grad_clip.*amp='off'"):
        trainer.fit()
    assert hashlib.sha256(trainer.last_path.read_bytes()).hexdigest() == hashes[5]  # written at step 4
    ckpt = load_checkpoint(trainer.last_path)
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


# ---------------------------------------------------------------------------------------------- compile, CUDA


def test_compile_wraps_the_model_and_checkpoints_keep_plain_keys(tmp_path, monkeypatch):
    """compile=True goes through torch.compile (a stand-in here: real compilation takes a minute on CPU)."""

    class Compiled(nn.Module):  # what torch.compile returns: the original module under `_orig_mod`
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

        def forward(self, *args):
            return self._orig_mod(*args)

    calls = []
    monkeypatch.setattr(torch, "compile", lambda m: calls.append(m) or Compiled(m))
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = TinyRegressor()
        cfg = TrainConfig(max_steps=3, batch_size=16, device="cpu", compile=compile_, progress=False,
                          out_dir=str(tmp_path / str(compile_)), log_every=3)  # fmt: skip
        trainer = Trainer(model, cfg, regression_dataset())
        trainer.fit()
        results.append(params_of(model))
    assert len(calls) == 1 and isinstance(calls[0], TinyRegressor)
    assert set(load_checkpoint(trainer.last_path)["model"]) == set(results[0])  # no "_orig_mod." prefix
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_cuda_only_switches_stay_off_on_the_cpu():
    from course_lib.trainer import _fused_if_cuda, enable_tf32

    assert _fused_if_cuda(torch.device("cuda")) == {"fused": True}
    assert _fused_if_cuda(torch.device("cpu")) == {}
    assert enable_tf32(torch.device("cpu")) is False
