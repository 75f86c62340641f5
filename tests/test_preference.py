"""DPO: course_lib's loss against trl's on fixed log-probabilities; answer log-probabilities by hand."""

from __future__ import annotations

import types
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
import trl.trainer.dpo_trainer as trl_dpo  # a dev dependency: the reference only

from course_lib.gpt import GPT, get_config
from course_lib.preference import check_preference_pair, completion_logprobs, dpo_loss


def _trl_dpo(per_token_logps, ref_chosen, ref_rejected, completion_mask, beta, loss_type):
    """Run trl's own DPOTrainer._compute_loss on fixed per-token log-probabilities.

    trl computes its loss inside the trainer, so a stand-in ``self`` carries the settings it reads and a
    stand-in model returns the log-probabilities instead of computing them. Returns (loss, trl's metrics).
    """

    class Accelerator:
        device = torch.device("cpu")

        @staticmethod
        def gather_for_metrics(t):
            return t

        gather = gather_for_metrics

    n = per_token_logps.shape[0]
    outputs = types.SimpleNamespace(
        log_probs=per_token_logps,
        entropy=torch.zeros_like(per_token_logps),
        mean_logits=torch.zeros_like(per_token_logps),
        is_top1=torch.zeros_like(per_token_logps, dtype=torch.bool),
    )
    model = types.SimpleNamespace(training=False)
    fake_self = types.SimpleNamespace(
        model=model,
        accelerator=Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(n, completion_mask.shape[1], dtype=torch.long),
        "attention_mask": torch.ones(n, completion_mask.shape[1], dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    loss = trl_dpo.DPOTrainer._compute_loss(fake_self, lambda **kw: outputs, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in fake_self._metrics["eval"].items()}


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trl_on_fixed_logprobs(loss_type, beta):
    g = torch.Generator().manual_seed(0)
    B, T = 6, 9
    per_token = -torch.rand(2 * B, T - 1, generator=g) * 3  # rows: B chosen answers, then B rejected
    completion_mask = torch.zeros(2 * B, T, dtype=torch.long)
    for i in range(2 * B):  # answers of different lengths after a 2-token prompt
        completion_mask[i, 2 : 3 + i % (T - 2)] = 1
    shift_mask = completion_mask[:, 1:]
    summed = (per_token * shift_mask).sum(1)
    policy_chosen, policy_rejected = summed[:B], summed[B:]
    ref_chosen = policy_chosen + torch.randn(B, generator=g)
    ref_rejected = policy_rejected + torch.randn(B, generator=g)
    lengths = shift_mask.sum(1).float()
    # trl's IPO divides by completion_mask's count (which includes no shifted position): use what it uses
    ipo_lengths = completion_mask.sum(1).float()

    ours = dpo_loss(
        policy_chosen,
        policy_rejected,
        ref_chosen,
        ref_rejected,
        beta=beta,
        loss_type=loss_type,
        chosen_tokens=ipo_lengths[:B] if loss_type == "ipo" else lengths[:B],
        rejected_tokens=ipo_lengths[B:] if loss_type == "ipo" else lengths[B:],
    )
    # trl's model returns 0 log-probability where labels are -100 (outside the answer): do the same
    ref_loss, metrics = _trl_dpo(
        per_token * shift_mask, ref_chosen, ref_rejected, completion_mask, beta, loss_type
    )
    torch.testing.assert_close(ours.loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert ours.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"], abs=1e-6)
    assert ours.rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"], abs=1e-6)
    assert ours.margins.mean().item() == pytest.approx(metrics["rewards/margins"], abs=1e-6)
    assert ours.accuracy == pytest.approx(metrics["rewards/accuracies"], abs=1e-6)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-4.0], requires_grad=True)
    out = dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-4.0]), beta=0.1)
    assert out.loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # -log sigmoid(0)
    out.loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descending the loss raises chosen, lowers rejected
    assert pc.grad.item() == pytest.approx(-0.05)  # -beta * sigmoid(0)


def test_completion_logprobs_equals_a_token_by_token_sum():
    torch.manual_seed(0)
    model = GPT(get_config("llama-tiny", vocab_size=50, block_size=16)).eval()
    ids = torch.randint(0, 50, (3, 10))
    mask = torch.zeros(3, 10, dtype=torch.long)
    mask[0, 4:] = 1
    mask[1, 6:9] = 1
    mask[2, 1:] = 1
    with torch.no_grad():
        got = completion_logprobs(model, ids, mask)
        logits, _ = model(ids)
    expected = []
    for b in range(3):
        total = 0.0
        for t in range(1, 10):
            if mask[b, t]:
                total += F.log_softmax(logits[b, t - 1], -1)[ids[b, t]].item()
        expected.append(total)
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 0}, "beta must be > 0"),
        ({"loss_type": "kto"}, "loss_type must be one of"),
        ({"loss_type": "ipo"}, "needs chosen_tokens"),
    ],
)
def test_dpo_loss_bad_settings_say_what_to_change(kwargs, match):
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=match):
        dpo_loss(x, x, x, x, **kwargs)


def test_dpo_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="share one"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))


def test_a_pair_whose_chosen_equals_rejected_is_refused():
    with pytest.raises(ValueError, match="the same"):
        check_preference_pair("Write a headline.", "Stocks rise", " Stocks rise ")
    with pytest.raises(ValueError, match="non-empty"):
        check_preference_pair("Write a headline.", "", "x")
    check_preference_pair("Write a headline.", "Stocks rise", "Markets")  # a good pair passes
