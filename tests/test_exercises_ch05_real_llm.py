"""The checks of course_lib.exercises.ch05_real_llm accept right answers and reject the usual mistakes,
naming the case that failed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from course_lib import gguf_file
from course_lib.exercises import ExerciseFailure
from course_lib.exercises import ch05_real_llm as ex

# ---------------------------------------------------------------- right answers, written from scratch


def q8_0(x):
    d = np.abs(x).max() / 127
    q = np.zeros(32) if d == 0 else x / d
    return float(d), (np.trunc(q) + np.where(np.abs(q - np.trunc(q)) >= 0.5, np.sign(q), 0)).astype(np.int8)


def q8_0_signed_max(x):  # max, not max |x|: fails when the largest magnitude is negative
    d = x.max() / 127
    return float(d), np.round(x / d).clip(-127, 127).astype(np.int8)


def q8_0_by_128(x):  # 128 steps: the scale is off
    d = np.abs(x).max() / 128
    return float(d), np.round(np.nan_to_num(x / d)).astype(np.int8)


def q8_0_truncating(x):  # int8 conversion without rounding
    d = np.abs(x).max() / 127
    return float(d), np.trunc(np.nan_to_num(x / d)).astype(np.int8)


def q8_0_int16(x):  # right values, wrong type
    d, q = q8_0(x)
    return d, q.astype(np.int16)


def q4_1(x):
    m = x.min()
    d = (x.max() - m) / 15
    q = np.zeros(32) if d == 0 else np.floor((x - m) / d + 0.5)
    return float(d), float(m), q.clip(0, 15).astype(np.uint8)


def q4_1_by_16(x):  # 16 codes, but 15 steps between them
    m = x.min()
    d = (x.max() - m) / 16
    q = np.zeros(32) if d == 0 else np.floor((x - m) / d + 0.5)
    return float(d), float(m), q.clip(0, 15).astype(np.uint8)


def q4_1_truncating(x):  # floor without + 0.5
    m = x.min()
    d = (x.max() - m) / 15
    q = np.zeros(32) if d == 0 else np.floor((x - m) / d)
    return float(d), float(m), q.clip(0, 15).astype(np.uint8)


def q4_1_no_minimum(x):  # as if values started at 0
    d = x.max() / 15
    q = np.zeros(32) if d == 0 else np.floor(x / d + 0.5)
    return float(d), 0.0, q.clip(0, 15).astype(np.uint8)


def unpack(qs):
    return np.concatenate([qs & 0x0F, qs >> 4]).astype(np.uint8)


def unpack_interleaved(qs):  # low, high, low, high ...
    return np.stack([qs & 0x0F, qs >> 4], axis=1).reshape(-1)


def unpack_high_first(qs):
    return np.concatenate([qs >> 4, qs & 0x0F])


def percentile(values, p):
    v = sorted(values)
    pos = (len(v) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def percentile_nearest_rank(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def percentile_by_numpy(values, p):
    return float(np.percentile(values, p))


def percentile_over_n(values, p):  # position p/100 * n, not (n - 1) * p / 100
    v = sorted(values)
    pos = min(len(v) - 1, len(v) * p / 100)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def unpack_by_the_library(qs):
    return gguf_file._unpack_nibbles(qs[None])[0]


def unpack_without_the_mask(qs):  # the low half keeps the high bits: codes above 15
    return np.concatenate([qs, qs >> 4]).astype(np.uint8)


def percentile_unsorted(values, p):
    pos = (len(values) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def throughput(starts, ends, n_tokens):
    return sum(n_tokens) / (max(ends) - min(starts))


def throughput_mean_of_rates(starts, ends, n_tokens):
    return sum(n / (e - s) for s, e, n in zip(starts, ends, n_tokens)) / len(n_tokens)


def throughput_sum_of_durations(starts, ends, n_tokens):
    return sum(n_tokens) / sum(e - s for s, e in zip(starts, ends))


def throughput_from_zero(starts, ends, n_tokens):  # assumes the clock started at 0
    return sum(n_tokens) / max(ends)


def stream_text(lines):
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            if data == "[DONE]":
                break
            for c in json.loads(data)["choices"]:
                out.append(c["delta"].get("content") or "")
    return "".join(out)


def stream_text_first_choice(lines):  # IndexError on the usage chunk
    out = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
    return "".join(out)


def stream_text_past_done(lines):  # does not stop at [DONE]
    out = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            for c in json.loads(line[6:])["choices"]:
                out.append(c["delta"].get("content") or "")
    return "".join(out)


def stream_text_every_line(lines):  # parses comments and blank lines
    out = []
    for line in lines:
        if line == "data: [DONE]":
            break
        for c in json.loads(line.removeprefix("data: "))["choices"]:
            out.append(c["delta"].get("content") or "")
    return "".join(out)


RIGHT = [
    (ex.check_q8_0_block, q8_0),
    (ex.check_q4_1_block, q4_1),
    (ex.check_unpack_nibbles, unpack),
    (ex.check_percentile, percentile),
    (ex.check_throughput, throughput),
    (ex.check_stream_text, stream_text),
]

WRONG = [
    (ex.check_q8_0_block, q8_0_signed_max, "case 1 of"),
    (ex.check_q8_0_block, q8_0_by_128, "case 1 of"),
    (ex.check_q8_0_block, q8_0_truncating, "case 1 of"),
    (ex.check_q8_0_block, q8_0_int16, "int16, expected int8"),
    (
        ex.check_q8_0_block,
        lambda x: (float(np.abs(x).max() / 127), gguf_file.quantize_q8_0(x[None])["qs"][0]),
        "uses the library",
    ),
    (ex.check_q4_1_block, q4_1_by_16, "case 1 of"),
    (ex.check_q4_1_block, q4_1_truncating, "case 1 of"),
    (ex.check_q4_1_block, q4_1_no_minimum, "case 1 of"),
    (ex.check_unpack_nibbles, unpack_interleaved, "low nibbles"),
    (ex.check_unpack_nibbles, unpack_high_first, "low nibbles"),
    (ex.check_percentile, percentile_nearest_rank, "median of 4"),
    (ex.check_percentile, percentile_unsorted, "median of 4"),
    (ex.check_percentile, percentile_by_numpy, "uses the library \\(percentile"),
    (ex.check_percentile, percentile_over_n, "case"),
    (ex.check_unpack_nibbles, unpack_by_the_library, "uses the library"),
    (ex.check_unpack_nibbles, unpack_without_the_mask, "case 1 of 3"),
    (ex.check_throughput, throughput_mean_of_rates, "four requests"),
    (ex.check_throughput, throughput_sum_of_durations, "four requests"),
    (ex.check_throughput, throughput_from_zero, "overlapping requests"),
    (ex.check_stream_text, stream_text_first_choice, "usage chunk"),
    (ex.check_stream_text, stream_text_past_done, "after \\[DONE\\]"),
    (ex.check_stream_text, stream_text_every_line, "two pieces"),
]
MUTANTS = WRONG  # listed by tests/test_exercise_audit.py


@pytest.mark.parametrize("check, right", RIGHT)
def test_right_answers_pass(check, right, capsys):
    check(right)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, case", WRONG)
def test_usual_mistakes_fail_and_name_the_case(check, wrong, case):
    with pytest.raises(ExerciseFailure, match=case):
        check(wrong)


@pytest.mark.parametrize("check", [c for c, _ in RIGHT])
def test_an_unwritten_exercise_says_so(check):
    def blank(*args):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet"):
        check(blank)
