"""SFT and DPO steps on SmolLM2-135M-Instruct with LoRA on the last blocks: the whole model against the
cached residual stream of course_lib.frozen_trunk (chapter 4.6 and 4.7's setting).

    python benchmarks/bench_frozen_trunk.py     # 8 BBC headline examples, LoRA r=8, last 6 blocks
    python benchmarks/bench_frozen_trunk.py --blocks 12 --repeats 5 --threads 2

Prints the one-off cost of caching (seconds per example, MiB kept per example) and, for an SFT step
(batch of --batch examples) and a DPO step (--batch // 2 pairs), the median seconds of --repeats
optimizer steps each way, run interleaved so a neighbour's load on a shared machine hits both alike;
then the two losses, which must agree.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from course_lib.datasets import bbc_news
from course_lib.frozen_trunk import (
    CachedDPOLoss,
    CachedSFTLoss,
    add_reference_logprobs,
    cached_examples,
    cached_pairs,
    pair_collate,
    trunk_collate,
)
from course_lib.instruct import instruction_loss
from course_lib.lm_data import pad_collate
from course_lib.lora import apply_lora, mark_only_lora_trainable
from course_lib.post_training import (
    DPOLoss,
    chat_sft_example,
    headline_messages,
    lead,
    preference_collate,
    preference_example,
)
from course_lib.smollm2 import load_smollm2, load_smollm2_tokenizer


def step_time(model, loss_fn, batch) -> tuple[float, float]:
    """Seconds of one AdamW step on ``batch``, and its loss."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # lr 0: weights stay
    t0 = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(model, batch)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6, help="LoRA on the attention of the last N blocks")
    parser.add_argument("--batch", type=int, default=8, help="SFT examples a step (DPO: half as many pairs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tok = load_smollm2_tokenizer()
    model = load_smollm2("cpu")
    first = model.config.n_layer - args.blocks
    targets = [f"h.{i}.attn.{p}" for i in range(first, model.config.n_layer) for p in ("qkv", "proj")]
    apply_lora(model, targets=targets, r=8, alpha=16)
    mark_only_lora_trainable(model)
    articles = bbc_news(dedupe=True)[: args.batch]
    examples = [chat_sft_example(headline_messages(a, 40), tok) for a in articles]
    pairs = [
        preference_example(headline_messages(a, 40, answer=False), a.headline.strip(), lead(a.body, 12), tok)
        for a in articles[: args.batch // 2]
    ]

    t0 = time.perf_counter()
    items = cached_examples(model, examples, first)
    cache_s = (time.perf_counter() - t0) / len(items)
    kept = statistics.mean(it["residual"].numel() * 4 for it in items) / 2**20
    cached_p = cached_pairs(model, pairs, first)
    add_reference_logprobs(model, cached_p, first)
    reference = copy.deepcopy(model)

    cases = {
        "SFT whole": (instruction_loss, pad_collate(examples, pad_id=0)),
        "SFT cached": (CachedSFTLoss(first), trunk_collate(items)),
        "DPO whole": (DPOLoss(reference), preference_collate(pairs, pad_id=0)),
        "DPO cached": (CachedDPOLoss(first), pair_collate(cached_p)),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    losses: dict[str, float] = {}
    model.train()
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, (fn, batch) in cases.items():
            s, losses[name] = step_time(model, fn, batch)
            times[name].append(s)
    n = model.config.n_layer
    print(f"threads {torch.get_num_threads()}, LoRA r=8 on the last {args.blocks} of {n} blocks")
    print(f"caching blocks 0-{first - 1}: {cache_s:.3f} s and {kept:.2f} MiB per example (once)")
    for task in ("SFT", "DPO"):
        whole = statistics.median(times[f"{task} whole"][1:])
        cached = statistics.median(times[f"{task} cached"][1:])
        print(
            f"{task} step: whole model {whole:.2f} s, cached {cached:.2f} s ({whole / cached:.1f}x); "
            f"loss {losses[f'{task} whole']:.5f} vs {losses[f'{task} cached']:.5f}"
        )


if __name__ == "__main__":
    main()
