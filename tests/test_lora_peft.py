"""course_lib's LoRA against peft's on the same Llama weights: same outputs before and after a step.

course_lib's GPT fuses q, k and v into one Linear while transformers' Llama keeps three, so the layers
compared are the ones both models keep whole: the attention output and the three SwiGLU projections.
"""

from __future__ import annotations

import peft  # a dev dependency: the reference only
import pytest
import torch

from course_lib.convert import gpt_to_hf_llama
from course_lib.gpt import GPT, get_config
from course_lib.lora import LoRALinear, apply_lora, lora_layers, mark_only_lora_trainable, merge_lora

# course_lib name -> transformers/peft name of the same Linear
PAIRS = {
    "attn.proj": "self_attn.o_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w3": "mlp.up_proj",
    "mlp.w2": "mlp.down_proj",
}
R, ALPHA = 4, 8.0


def _models():
    torch.manual_seed(0)
    ours = GPT(get_config("llama-tiny", vocab_size=97, block_size=32)).eval()
    hf = gpt_to_hf_llama(ours).eval()
    apply_lora(ours, targets=list(PAIRS), r=R, alpha=ALPHA)
    mark_only_lora_trainable(ours)
    config = peft.LoraConfig(
        r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=[v.split(".")[1] for v in PAIRS.values()]
    )
    theirs = peft.get_peft_model(hf, config).eval()
    # give both the same adapter weights, with B non-zero so the update is visible
    g = torch.Generator().manual_seed(1)
    peft_modules = dict(theirs.named_modules())
    for name, layer in lora_layers(ours):
        block = name.split(".")[2]
        suffix = next(k for k in PAIRS if name.endswith(k))
        peft_layer = peft_modules[f"base_model.model.model.layers.{block}.{PAIRS[suffix]}"]
        with torch.no_grad():
            layer.lora_B.normal_(0, 0.02, generator=g)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
    return ours, theirs


def _loss_ours(model, ids):
    _, loss = model(ids[:, :-1], ids[:, 1:].contiguous())
    return loss


def _loss_theirs(model, ids):
    logits = model(input_ids=ids[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))


def test_lora_equals_peft_before_and_after_one_adamw_step():
    ours, theirs = _models()
    ids = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(2))
    trainable_ours = [p for p in ours.parameters() if p.requires_grad]
    trainable_theirs = [p for p in theirs.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable_ours) == sum(p.numel() for p in trainable_theirs)

    with torch.no_grad():
        before = (ours(ids)[0], theirs(input_ids=ids).logits)
    assert (before[0] - before[1]).abs().max().item() <= 1e-5

    opts = [torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.0) for ps in (trainable_ours, trainable_theirs)]
    for model, opt, loss_fn in zip((ours, theirs), opts, (_loss_ours, _loss_theirs)):
        model.train()
        opt.zero_grad()
        loss_fn(model, ids).backward()
        opt.step()
        model.eval()
    with torch.no_grad():
        after = (ours(ids)[0], theirs(input_ids=ids).logits)
    assert (after[0] - before[0]).abs().max().item() > 1e-3  # the step changed the outputs
    assert (after[0] - after[1]).abs().max().item() <= 1e-5


def test_merged_model_equals_the_adapter_model():
    ours, _ = _models()
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        adapter = ours(ids)[0]
        merge_lora(ours)
        merged = ours(ids)[0]
    assert (adapter - merged).abs().max().item() <= 1e-5


@pytest.mark.parametrize("r", [0, -2, 65])
def test_a_rank_that_is_not_positive_or_larger_than_the_layer_is_refused(r):
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(torch.nn.Linear(64, 128), r=r)
