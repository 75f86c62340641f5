"""Self-checks for chapter 5's notebooks on the real LLM (5.7 quantizing it, 5.8 serving it).

5.7: a Q8_0 block, a Q4_1 block, the nibble order of a 4-bit block; the references are
:mod:`course_lib.gguf_file`'s quantizers and dequantizers (themselves checked against the ``gguf``
package). 5.8: a latency percentile, the tokens/s of concurrent requests, a streamed answer's text.
"""

from __future__ import annotations

import json

import numpy as np

from course_lib.exercises import Case, ExerciseFailure, check_function, require_own_code
from course_lib.gguf_file import Q4_1_BLOCK, QK, _unpack_nibbles, quantize_q4_1, quantize_q8_0

# ----------------------------------------------------------------------------- 5.7 GGUF blocks


def _block(label: str, seed: int, scale: float = 0.02, shift: float = 0.0) -> Case:
    x = np.random.default_rng(seed).standard_normal(QK).astype(np.float32) * scale + shift
    return Case(label, (x,))


def _block_cases() -> list[Case]:
    negative = _block("the largest magnitude is negative", 1)
    negative.args[0][5] = -0.3
    zeros = Case("an all-zero block", (np.zeros(QK, np.float32),))
    return [
        _block("32 weights of std 0.02", 0),
        negative,
        _block("all positive (a shifted block)", 2, shift=0.1),
        zeros,
        _block("large values", 3, scale=30.0),
    ]


def _require_dtype(name: str, fn, case: Case, index: int, dtype: np.dtype) -> None:
    got = np.asarray(fn(case.args[0].copy())[index])
    if got.dtype != dtype:
        raise ExerciseFailure(f"{name}, case ({case.label}): the codes are {got.dtype}, expected {dtype}")


def _reference_q8_0(x: np.ndarray) -> tuple[float, np.ndarray]:
    d = float(np.abs(x).max() / 127)
    return d, quantize_q8_0(x[None])["qs"][0]  # q is computed with the float32 scale


def check_q8_0_block(fn) -> None:
    """``fn(x) -> (d, q)``: one Q8_0 block of 32 float32 values -> its float32 scale and int8 codes."""
    require_own_code(fn, "q8_0_block", packages=("gguf",))
    cases = _block_cases()
    check_function(
        "q8_0_block",
        fn,
        _reference_q8_0,
        cases,
        atol=0,
        rtol=1e-6,
        hint="d is the largest absolute value divided by 127 (its sign does not matter); q = x / d rounded "
        "to the nearest integer (halves away from zero); a block of zeros has d = 0 and q = 0, not nan",
    )
    _require_dtype("q8_0_block", fn, cases[0], 1, np.dtype(np.int8))


def _reference_q4_1(x: np.ndarray) -> tuple[float, float, np.ndarray]:
    lo, hi = float(x.min()), float(x.max())
    raw = quantize_q4_1(x[None])
    return (hi - lo) / 15, lo, _unpack_nibbles(raw["qs"])[0]


def check_q4_1_block(fn) -> None:
    """``fn(x) -> (d, m, q)``: one Q4_1 block -> float32 scale d, minimum m and 4-bit codes q (uint8, 0..15),
    so that x is close to q * d + m."""
    require_own_code(fn, "q4_1_block", packages=("gguf",))
    cases = _block_cases()
    check_function(
        "q4_1_block",
        fn,
        _reference_q4_1,
        cases,
        atol=1e-7,
        rtol=1e-5,
        hint="m is the block's minimum and d spreads max - m over the 16 codes 0..15 (how many steps is "
        "that?); q = (x - m) / d rounded to nearest and kept within 0..15; a constant block has d = 0",
    )
    _require_dtype("q4_1_block", fn, cases[0], 2, np.dtype(np.uint8))


def _packed_case(label: str, seed: int) -> Case:
    x = np.random.default_rng(seed).standard_normal((1, QK)).astype(np.float32)
    return Case(label, (quantize_q4_1(x)["qs"][0].copy(),))


def check_unpack_nibbles(fn) -> None:
    """``fn(qs) -> q``: the 16 bytes of a 4-bit block -> its 32 codes (uint8, 0..15) in the block's order."""
    require_own_code(fn, "unpack_nibbles", packages=("gguf",))
    ramp = np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)
    cases = [
        Case("codes 0..15 in the low nibbles, 15..0 in the high", (ramp,)),
        _packed_case("a real Q4_1 block", 0),
        _packed_case("another real Q4_1 block", 1),
    ]
    assert Q4_1_BLOCK["qs"].shape == (QK // 2,)
    check_function(
        "unpack_nibbles",
        fn,
        lambda qs: _unpack_nibbles(qs[None])[0],
        cases,
        atol=0,
        rtol=0,
        hint="byte j holds two codes: its low 4 bits (qs & 0x0F) are value j of the block, its high 4 bits "
        "(qs >> 4) are value j + 16 -- the first half of the block, then the second, not interleaved",
    )


# ----------------------------------------------------------------------------- 5.8 serving


def _reference_percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), p))


def check_percentile(fn) -> None:
    """``fn(values, p) -> float``: the p-th percentile (0..100) with linear interpolation between the
    sorted values (numpy's default)."""
    require_own_code(fn, "percentile", forbidden=("percentile", "quantile", "nanpercentile"))
    cases = [
        Case("the median of 4 values (between the middle two)", ([0.4, 0.1, 0.3, 0.2], 50.0)),
        Case("p90 of 11 unsorted values", ([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0, 0.0], 90.0)),
        Case("p95 of 8 latencies", ([0.21, 0.25, 0.22, 1.9, 0.24, 0.23, 0.26, 0.2], 95.0)),
        Case("p0 is the minimum", ([3.0, 1.0, 2.0], 0.0)),
        Case("p100 is the maximum", ([3.0, 1.0, 2.0], 100.0)),
        Case("a single value", ([0.7], 99.0)),
    ]
    check_function(
        "percentile",
        fn,
        _reference_percentile,
        cases,
        atol=1e-9,
        rtol=1e-9,
        hint="sort the values; the p-th percentile sits at position (n - 1) * p / 100 of the sorted list; "
        "when that position falls between two values, interpolate linearly between them",
    )


def _reference_throughput(starts: list[float], ends: list[float], n_tokens: list[int]) -> float:
    return float(sum(n_tokens) / (max(ends) - min(starts)))


def check_throughput(fn) -> None:
    """``fn(starts, ends, n_tokens) -> float``: tokens per second that a server delivered to requests
    sent at ``starts`` and finished at ``ends`` (seconds), request i receiving ``n_tokens[i]`` tokens."""
    require_own_code(fn, "throughput")
    cases = [
        Case("one request", ([0.0], [2.0], [40])),
        Case(
            "four requests queued one after another", ([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0], [20] * 4)
        ),
        Case("overlapping requests of different lengths", ([0.5, 0.7, 1.0], [3.5, 2.0, 4.5], [30, 10, 25])),
        Case("start times not at zero", ([100.0, 100.2], [101.0, 101.4], [12, 16])),
    ]
    check_function(
        "throughput",
        fn,
        _reference_throughput,
        cases,
        atol=1e-9,
        rtol=1e-9,
        hint="the server's rate is all the tokens it produced divided by the wall-clock time from the "
        "first request sent to the last one finished -- not an average of each request's own rate",
    )


def _sse_text(lines: list[str]) -> str:
    text = []
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            break
        for choice in json.loads(data).get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def _chunk(content: str | None = None, role: str | None = None, usage: bool = False) -> str:
    if usage:
        body = {"object": "chat.completion.chunk", "choices": [], "usage": {"completion_tokens": 3}}
    else:
        delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
        body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
    return "data: " + json.dumps(body)


def check_stream_text(fn) -> None:
    """``fn(lines) -> str``: the answer carried by the lines of a streamed chat completion (server-sent
    events: ``data: {json chunk}`` lines, blank lines between them, ``data: [DONE]`` at the end)."""
    require_own_code(fn, "stream_text")
    basic = [
        _chunk(role="assistant", content=""),
        "",
        _chunk("Hel"),
        "",
        _chunk("lo"),
        "",
        "data: [DONE]",
        "",
    ]
    with_usage = [_chunk(role="assistant"), _chunk("The"), _chunk(" sky"), _chunk(usage=True), "data: [DONE]"]
    after_done = [_chunk("yes"), "data: [DONE]", _chunk(" and more")]
    comments = [": keep-alive", _chunk("a"), "", ": ping", _chunk(" b"), "data: [DONE]"]
    cases = [
        Case("two pieces of text", (basic,)),
        Case("a usage chunk with no choices at the end", (with_usage,)),
        Case("nothing after [DONE] counts", (after_done,)),
        Case("comment lines (starting with ':')", (comments,)),
        Case("an empty answer", ([_chunk(role="assistant"), "data: [DONE]"],)),
    ]
    check_function(
        "stream_text",
        fn,
        _sse_text,
        cases,
        hint="keep only lines that start with 'data: '; stop at 'data: [DONE]'; each other line is JSON "
        "whose "
        "choices (possibly an empty list) carry delta.content (possibly missing); join the pieces",
    )
