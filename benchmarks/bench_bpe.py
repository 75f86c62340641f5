"""Time the from-scratch byte-level BPE on the full BBC News corpus (2,225 articles, ~5 MB).

    python benchmarks/bench_bpe.py [--vocab-sizes 8192 2048] [--repeats 1]

Prints training time per vocabulary size (target: under 60 s for 8192), encoding time for the whole
corpus with an empty and a warm pre-token cache, decoding time, and bytes per token. For scale it also
times Hugging Face's Rust BPE encoding the same corpus with the same merges.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.datasets import bbc_news  # noqa: E402
from course_lib.tokenizers import BPETokenizer, token_str  # noqa: E402

TARGET_SECONDS = 60.0


def timed(fn, repeats: int = 1):
    """Best wall time of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def hf_encode_seconds(tok: BPETokenizer, texts: list[str]) -> float | None:
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers
    except ImportError:
        return None
    vocab = {tok.id_to_token(i): i for i in range(len(tok.vocab))}
    hf = Tokenizer(models.BPE(vocab=vocab, merges=[(token_str(a), token_str(b)) for a, b in tok.merges]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    seconds, _ = timed(lambda: hf.encode_batch(texts))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[8192, 2048])
    parser.add_argument("--repeats", type=int, default=1, help="training runs per size (best is reported)")
    args = parser.parse_args()

    texts = [a.text for a in bbc_news()]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"corpus: {len(texts)} BBC articles, {n_bytes / 1e6:.2f} MB of UTF-8")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )

    for vocab_size in args.vocab_sizes:
        train_s, tok = timed(
            lambda v=vocab_size: BPETokenizer.train(texts, v, show_progress=False), args.repeats
        )
        flag = "ok" if train_s < TARGET_SECONDS else f"OVER the {TARGET_SECONDS:.0f} s target"
        print(f"\nvocab {vocab_size}: train {train_s:6.2f} s ({len(tok.merges)} merges, {flag})")

        cold = BPETokenizer(tok.merges, list(tok.special_tokens))  # a fresh pre-token cache
        cold_s, ids = timed(lambda c=cold: c.encode_batch(texts))
        warm_s, _ = timed(lambda c=cold: c.encode_batch(texts))
        n_tokens = sum(len(x) for x in ids)
        dec_s, decoded = timed(lambda c=cold, ids=ids: [c.decode(x) for x in ids])
        assert decoded == texts, "round trip failed"
        print(
            f"  encode corpus: {cold_s:5.2f} s cold cache, {warm_s:5.2f} s warm "
            f"({n_tokens / cold_s / 1e6:.2f} M tok/s cold)"
        )
        print(f"  decode corpus: {dec_s:5.2f} s; {n_tokens:,} tokens, {n_bytes / n_tokens:.2f} bytes/token")
        hf_s = hf_encode_seconds(tok, texts)
        if hf_s is not None:
            print(f"  Hugging Face (Rust) encode of the same corpus and merges: {hf_s:5.2f} s")


if __name__ == "__main__":
    main()
