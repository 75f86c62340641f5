"""GGUF block quantization of a whole model (course_lib.compress section 5) and lm_perplexity.

Tolerances: none for the weights -- every fake-quantized weight must equal, bit for bit, the ``gguf``
package's quantize-then-dequantize of the same float32 tensor. Sizes are exact byte counts.
lm_perplexity: 1e-5 relative against a cross-entropy written out with PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.compress import GGUF_QTYPES, fake_quantize_gguf, gguf_qtype, gguf_size_bytes, gguf_weights
from course_lib.gpt import GPT, get_config
from course_lib.metrics import lm_perplexity

gguf = pytest.importorskip("gguf")


def tiny_gpt(tie: bool = True) -> GPT:
    torch.manual_seed(0)
    return GPT(get_config("llama-tiny", vocab_size=96, block_size=32, tie_weights=tie)).eval()


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "F16"])
def test_fake_quantized_weights_equal_the_gguf_packages_round_trip(qtype):
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fq = fake_quantize_gguf(model, qtype.lower())
    t = gguf.GGMLQuantizationType[qtype]
    weights = gguf_weights(fq)
    assert "lm_head.weight" in weights or "transformer.wte.weight" in weights
    assert len(weights) == len(gguf_weights(model))
    for name, w in weights.items():
        x = model.get_parameter(name).detach().numpy()
        ref = gguf.quants.dequantize(gguf.quants.quantize(x, t), t).reshape(x.shape)
        np.testing.assert_array_equal(w.detach().numpy(), ref.astype(np.float32), err_msg=name)
        if qtype != "F16":
            assert not np.array_equal(w.detach().numpy(), x), f"{name} was not quantized"
    for name, p in fq.named_parameters():  # norms are not block-quantized
        if name not in weights and "wte" not in name:
            torch.testing.assert_close(p, model.get_parameter(name), rtol=0, atol=0)
    assert fq.lm_head.weight is fq.transformer.wte.weight  # still tied
    for k, v in model.state_dict().items():  # the original is untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_gguf_size_bytes_counts_blocks_and_float32_rest():
    model = tiny_gpt()
    n_params = sum(p.numel() for p in model.parameters())  # tied weight counted once by parameters()
    assert gguf_size_bytes(model, "F32") == 4 * n_params
    weights = gguf_weights(model)
    rest = n_params - sum(w.numel() for w in weights.values())
    for qtype in ("Q8_0", "Q4_0", "Q4_1"):
        t = gguf.GGMLQuantizationType[qtype]
        block = sum(gguf.quants.quantize(w.detach().numpy(), t).nbytes for w in weights.values())
        assert gguf_size_bytes(model, qtype) == block + 4 * rest
    # bits per weight: Q8_0 8.5, Q4_1 5, Q4_0 4.5 (34, 20, 18 bytes per 32 values)
    n_w = sum(w.numel() for w in weights.values())
    for qtype, bits in {"Q8_0": 8.5, "Q4_1": 5.0, "Q4_0": 4.5}.items():
        assert (gguf_size_bytes(model, qtype) - 4 * rest) * 8 / n_w == bits


def test_untied_model_quantizes_both_embedding_and_head():
    model = tiny_gpt(tie=False)
    names = set(gguf_weights(model))
    assert {"transformer.wte.weight", "lm_head.weight"} <= names


@pytest.mark.parametrize("bad", ["Q4_K", "q2_k", "int3", "nf4", 99])
def test_unimplemented_quantization_types_are_refused_with_the_list(bad):
    with pytest.raises(ValueError, match="not implemented in course_lib.*Q8_0, Q4_1, Q4_0"):
        gguf_qtype(bad)
    with pytest.raises(ValueError, match="not implemented"):
        fake_quantize_gguf(tiny_gpt(), bad)
    with pytest.raises(ValueError, match="not implemented"):
        gguf_size_bytes(tiny_gpt(), bad)
    assert [gguf_qtype(t).name for t in GGUF_QTYPES] == list(GGUF_QTYPES)


def _reference_nll(model, ids, window):
    total, count = 0.0, 0
    for s in range(0, len(ids) - 1, window):
        x, y = ids[s : s + window], ids[s + 1 : s + window + 1]
        x = x[: len(y)]
        logits, _ = model(x[None])
        total += F.cross_entropy(logits[0], y, reduction="sum").item()
        count += len(y)
    return total / count


@pytest.mark.parametrize("n, window", [(20, 32), (33, 32), (40, 7), (2, 5)])
def test_lm_perplexity_equals_cross_entropy_by_hand(n, window):
    model = tiny_gpt()
    ids = torch.randint(0, 96, (n,), generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        ref = math.exp(_reference_nll(model, ids, window))
    assert lm_perplexity(model, ids, window) == pytest.approx(ref, rel=1e-5)
    if n > window + 1:  # windows that overlap nothing give a different number than one long window
        assert lm_perplexity(model, ids, window) != pytest.approx(lm_perplexity(model, ids, 32), rel=1e-6)


def test_lm_perplexity_rejects_too_little_text():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        lm_perplexity(tiny_gpt(), [5], 8)
