"""Benchmarks for course_lib.compress: quantization, distillation, pruning on sklearn's digits (and MiniLM).

    python benchmarks/bench_compress.py                 # everything, about 2-3 minutes on one CPU thread
    python benchmarks/bench_compress.py --skip-minilm   # digits only

1. Quantization: an MLP 64-512-512-10 and the DigitCNN, trained briefly, in fp32, with PyTorch's dynamic
   int8 (weights and activations) and with the from-scratch weight-only int8 (QuantLinear): state-dict
   size, CPU latency at batch 1 and 64, test accuracy. Then all-MiniLM-L6-v2 fp32 vs dynamic int8:
   size, latency, embedding agreement and headline -> article retrieval on 50 BBC articles.
2. Distillation: the MLP as teacher; one-hidden-layer students of several widths trained with plain
   cross-entropy and with distillation (same epochs, same seeds): parameters, size, test accuracy.
3. Pruning: the teacher's accuracy against sparsity (global and per-layer magnitude pruning, before and
   after a short fine-tune with the masks), and structured neuron pruning (a really smaller MLP).

Runs on one thread (``torch.set_num_threads(1)``): the course machines are shared, and tiny models are
faster on one thread anyway. Accuracies are on a fixed 20% test split (360 images).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from course_lib.compress import (
    distill,
    magnitude_prune,
    measure_latency,
    model_size_bytes,
    prune_mlp_neurons,
    quantize_dynamic_int8,
    quantize_linears,
    sparsity,
)
from course_lib.datasets import digits, stratified_split
from course_lib.env import seed_everything
from course_lib.layers import num_parameters
from course_lib.mlp_cnn import MLP, DigitCNN


def load_digits_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    images, labels = digits()
    x = torch.from_numpy(images).flatten(1)  # (N, 64) in [0, 1]
    y = torch.from_numpy(labels)
    splits = stratified_split(labels, fractions=(0.7, 0.1, 0.2), seed=0)
    return {name: (x[idx], y[idx]) for name, idx in zip(("train", "val", "test"), splits)}


def loader(data: tuple[torch.Tensor, torch.Tensor], seed: int, batch_size: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*data), batch_size=batch_size, shuffle=True, generator=g)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    x, y = data
    return float((model(x).argmax(-1) == y).float().mean())


def train(model: torch.nn.Module, data, epochs: int, seed: int, lr: float = 2e-3, **kw) -> torch.nn.Module:
    """Plain cross-entropy training is distill() with alpha=0 and no teacher."""
    seed_everything(seed)
    teacher = kw.pop("teacher", None)
    kw.setdefault("alpha", 0.0 if teacher is None else 0.5)
    distill(teacher, model, loader(data, seed), epochs=epochs, lr=lr, **kw)
    return model.eval()


def kb(n_bytes: int) -> str:
    return f"{n_bytes / 1024:.1f}"


# ----------------------------------------------------------------------------------------------------
# 1. Quantization


def bench_quantization(d, teacher: MLP, cnn: DigitCNN, repeats: int) -> None:
    print("\n## 1. Quantization: fp32 vs int8 (CPU, 1 thread; latency = median of", repeats, "calls)")
    print("| model | variant | state dict (KB) | size ratio | batch 1 (us) | batch 64 (us) | test acc |")
    print("|---|---|---:|---:|---:|---:|---:|")
    x1, x64 = d["test"][0][:1], d["test"][0][:64]
    for name, model in (("MLP 64-512-512-10", teacher), ("DigitCNN 32-64", cnn)):
        base = model_size_bytes(model)
        variants = {
            "fp32": model,
            "int8 dynamic (torch)": quantize_dynamic_int8(model),
            "int8 weight-only (QuantLinear)": quantize_linears(model),
        }
        for variant, m in variants.items():
            m.eval()
            t1 = measure_latency(m, x1, repeats=repeats) * 1e6
            t64 = measure_latency(m, x64, repeats=repeats) * 1e6
            size = model_size_bytes(m)
            print(
                f"| {name} | {variant} | {kb(size)} | {base / size:.2f}x | {t1:.0f} | {t64:.0f} | "
                f"{accuracy(m, d['test']):.4f} |"
            )
    print(
        "DigitCNN: only its final Linear is quantized (dynamic quantization covers Linear layers; "
        "most of its weights are in the convolutions)."
    )


def bench_minilm(repeats: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from course_lib.datasets import bbc_news
    from course_lib.encoder import SentenceEncoder
    from course_lib.semantic_search import mean_reciprocal_rank, recall_at_k

    fp32 = SentenceEncoder.from_minilm(device="cpu")
    int8 = SentenceEncoder(quantize_dynamic_int8(fp32.encoder), fp32.tokenizer)
    articles = [a for label in range(5) for a in [x for x in bbc_news() if x.label_id == label][:10]]
    heads, bodies = [a.headline for a in articles], [a.body for a in articles]
    batch = fp32.tokenizer.encode_batch(heads[:8])  # 8 headlines, padded to the longest
    args = (batch["input_ids"], batch["attention_mask"])
    print(
        f"\n## 1b. all-MiniLM-L6-v2, fp32 vs dynamic int8 (Linear layers; the 30522 x 384 embedding "
        f"table stays fp32). Latency: batch of 8 headlines, {args[0].shape[1]} tokens"
    )
    print("| variant | state dict (MB) | latency (ms) | recall@1 headline -> article (50) | MRR |")
    print("|---|---:|---:|---:|---:|")
    embs = {}
    for name, enc in (("fp32", fp32), ("int8 dynamic", int8)):
        t = measure_latency(enc.encoder, args, repeats=repeats) * 1e3
        docs, queries = enc.encode(bodies), enc.encode(heads)  # headline i belongs to article i
        top1 = recall_at_k(queries, docs, list(range(len(articles))), ks=(1,))[1]
        mrr = mean_reciprocal_rank(queries, docs, list(range(len(articles))))
        embs[name] = docs
        print(f"| {name} | {model_size_bytes(enc.encoder) / 1e6:.1f} | {t:.1f} | {top1:.2f} | {mrr:.3f} |")
    cos = (embs["fp32"] * embs["int8 dynamic"]).sum(-1)  # both unit length
    print(f"cosine(fp32, int8) of the 50 article embeddings: mean {cos.mean():.4f}, min {cos.min():.4f}")


# ----------------------------------------------------------------------------------------------------
# 2. Distillation


def bench_distillation(d, teacher: MLP, widths, seeds, epochs: int, T: float, alpha: float) -> None:
    t_acc = accuracy(teacher, d["test"])
    print(
        f"\n## 2. Distillation on digits: teacher MLP 64-512-512-10 ({num_parameters(teacher):,} params, "
        f"{kb(model_size_bytes(teacher))} KB, test acc {t_acc:.4f}); students 64-w-10, {epochs} epochs, "
        f"T={T}, alpha={alpha}; mean (min-max) over seeds {list(seeds)}"
    )
    print("| student width | params | size (KB) | plain CE acc | distilled acc | gain |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in widths:
        plain, dist = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            s0 = MLP([64, w, 10])
            s1 = MLP([64, w, 10])
            s1.load_state_dict(s0.state_dict())  # the same start for both
            plain.append(accuracy(train(s0, d["train"], epochs, seed, alpha=0.0), d["test"]))
            kw = {"teacher": teacher, "temperature": T, "alpha": alpha}
            dist.append(accuracy(train(s1, d["train"], epochs, seed, **kw), d["test"]))
        p, q = statistics.mean(plain), statistics.mean(dist)
        print(
            f"| {w} | {num_parameters(s0):,} | {kb(model_size_bytes(s0))} | {p:.4f} ({min(plain):.3f}-"
            f"{max(plain):.3f}) | {q:.4f} ({min(dist):.3f}-{max(dist):.3f}) | {q - p:+.4f} |"
        )


def bench_transfer_set(d, teacher: MLP, width: int, seeds, epochs: int, T: float, label_frac: float) -> None:
    """Where distillation pays: few labels. The plain student learns from the labelled images only; the
    distilled one learns from the teacher's soft labels on every training image (alpha=1: no true labels)."""
    x, y = d["train"]
    n_lab = int(label_frac * len(y))
    plain_epochs = round(epochs * len(y) / n_lab)  # as many optimizer steps as the distilled student
    print(
        f"\n## 2b. Few labels: student 64-{width}-10 trained on the {n_lab} labelled images of {len(y)} "
        f"({plain_epochs} epochs) vs distilled (alpha=1, T={T}) on all {len(y)} images without their labels "
        f"({epochs} epochs: the same number of steps)"
    )
    print("| student | images seen | labels used | test acc (mean over seeds) |")
    print("|---|---:|---:|---:|")
    plain, dist = [], []
    for seed in seeds:
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n_lab]
        torch.manual_seed(seed)
        s0, s1 = MLP([64, width, 10]), MLP([64, width, 10])
        s1.load_state_dict(s0.state_dict())
        plain.append(accuracy(train(s0, (x[perm], y[perm]), plain_epochs, seed), d["test"]))
        kw = {"teacher": teacher, "temperature": T, "alpha": 1.0}
        dist.append(accuracy(train(s1, d["train"], epochs, seed, **kw), d["test"]))
    print(f"| plain cross-entropy | {n_lab} | {n_lab} | {statistics.mean(plain):.4f} |")
    print(f"| distilled from the teacher | {len(y)} | 0 | {statistics.mean(dist):.4f} |")


# ----------------------------------------------------------------------------------------------------
# 3. Pruning


def clone_mlp(m: MLP) -> MLP:
    c = MLP(m.sizes, activation=m.activation)
    c.load_state_dict(m.state_dict())
    return c


def bench_pruning(d, teacher: MLP, levels, finetune_epochs: int) -> None:
    print(
        f"\n## 3a. Magnitude pruning of the teacher (Linear weights; fine-tune = {finetune_epochs} epochs "
        "with the masks re-applied after every step)"
    )
    print("| sparsity | global: acc | global: fine-tuned | per-layer: acc | per-layer: fine-tuned |")
    print("|---:|---:|---:|---:|---:|")
    for s in levels:
        cells = []
        for scope in ("global", "layer"):
            m = clone_mlp(teacher)
            masks = magnitude_prune(m, s, scope=scope)
            assert abs(sparsity(m) - s) < 0.01
            acc = accuracy(m, d["test"])
            train(m, d["train"], finetune_epochs, seed=0, lr=5e-4, alpha=0.0, masks=masks)
            cells += [f"{acc:.4f}", f"{accuracy(m, d['test']):.4f}"]
        print(f"| {s:.2f} | " + " | ".join(cells) + " |")

    print(
        "\n## 3b. Structured pruning: remove a fraction of each hidden layer's neurons (smallest L2 row "
        f"norm); fine-tune {finetune_epochs} epochs"
    )
    print("| neurons removed | hidden sizes | params | size (KB) | batch 64 (us) | acc | fine-tuned |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    x64 = d["test"][0][:64]
    for amount in (0.0, 0.5, 0.75, 0.9, 0.95):
        small, _ = prune_mlp_neurons(clone_mlp(teacher), amount)
        acc = accuracy(small, d["test"])
        t64 = measure_latency(small, x64, repeats=30) * 1e6
        size = model_size_bytes(small)
        train(small, d["train"], finetune_epochs, seed=0, lr=5e-4, alpha=0.0)
        print(
            f"| {amount:.2f} | {small.sizes[1:-1]} | {num_parameters(small):,} | {kb(size)} | {t64:.0f} | "
            f"{acc:.4f} | {accuracy(small, d['test']):.4f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-minilm", action="store_true", help="leave out the MiniLM part (about 40 s)")
    p.add_argument("--epochs", type=int, default=40, help="training epochs for teacher and students")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds to average")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64], help="student hidden widths")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation term")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per latency figure")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    d = load_digits_splits()
    print(f"# bench_compress: torch {torch.__version__}, 1 thread; digits train/val/test = "
          f"{len(d['train'][1])}/{len(d['val'][1])}/{len(d['test'][1])}")  # fmt: skip

    torch.manual_seed(0)
    teacher = train(MLP([64, 512, 512, 10]), d["train"], args.epochs, seed=0, lr=1e-3)
    torch.manual_seed(0)
    cnn = train(DigitCNN(), d["train"], max(args.epochs // 2, 1), seed=0, lr=2e-3)
    print(f"trained teacher and CNN in {time.perf_counter() - t0:.1f} s")

    bench_quantization(d, teacher, cnn, args.repeats)
    if not args.skip_minilm:
        bench_minilm(repeats=5)
    t1 = time.perf_counter()
    bench_distillation(d, teacher, args.widths, args.seeds, args.epochs, args.temperature, args.alpha)
    bench_transfer_set(d, teacher, 32, args.seeds, args.epochs, args.temperature, label_frac=0.1)
    t2 = time.perf_counter()
    print(f"(distillation: {t2 - t1:.0f} s)")
    bench_pruning(d, teacher, levels=(0.0, 0.5, 0.8, 0.9, 0.95, 0.98), finetune_epochs=5)
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
