"""Chapter 1's self-checks pass right answers and reject the usual wrong ones, naming the case."""

from __future__ import annotations

import math

import pytest

from course_lib import model_costs
from course_lib.exercises import ExerciseFailure
from course_lib.exercises.ch01 import (
    check_adamw_training_bytes,
    check_compute_optimal_plan,
    check_gpt2_parameter_count,
)
from course_lib.gpt import get_config

# ------------------------------------------------------------------------- answers a learner may write


def gpt2_parameter_count(vocab_size, block_size, n_layer, d_model):
    d = d_model
    per_block = (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d) + 4 * d
    return vocab_size * d + block_size * d + n_layer * per_block + 2 * d


def count_without_positions(vocab_size, block_size, n_layer, d_model):  # forgot the position table
    return gpt2_parameter_count(vocab_size, block_size, n_layer, d_model) - block_size * d_model


def count_untied(vocab_size, block_size, n_layer, d_model):  # a separate output layer
    return gpt2_parameter_count(vocab_size, block_size, n_layer, d_model) + vocab_size * d_model


def count_without_biases(vocab_size, block_size, n_layer, d_model):  # weights only in the blocks
    return gpt2_parameter_count(vocab_size, block_size, n_layer, d_model) - n_layer * 9 * d_model


def count_by_the_library(vocab_size, block_size, n_layer, d_model):  # the answer, not written
    return get_config(
        "gpt2", vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, d_model=d_model, n_head=1
    ).num_parameters()


def adamw_bytes(n_params):
    return 16 * n_params


def adamw_bytes_one_moment(n_params):  # SGD with momentum, not Adam
    return 12 * n_params


def adamw_bytes_states_only(n_params):  # the two moments, without the weights and gradients
    return 8 * n_params


def adamw_bytes_in_bits(n_params):  # 32 bits, not 4 bytes
    return 4 * 32 * n_params


def adamw_bytes_by_the_library(n_params):
    return int(model_costs.training_memory(n_params, "fp32", "adamw").total)


def plan(flops, tokens_per_parameter=20.0):
    n = math.sqrt(flops / (6 * tokens_per_parameter))
    return n, tokens_per_parameter * n


def plan_without_the_6(flops, tokens_per_parameter=20.0):  # C = N D forgets the FLOPs per token
    n = math.sqrt(flops / tokens_per_parameter)
    return n, tokens_per_parameter * n


def plan_ignoring_the_ratio(flops, tokens_per_parameter=20.0):  # 20 written in, the argument unused
    n = math.sqrt(flops / 120)
    return n, 20 * n


def plan_without_the_square_root(flops, tokens_per_parameter=20.0):  # C = 6 r N solved as if linear
    n = flops / (6 * tokens_per_parameter)
    return n, tokens_per_parameter * n


def plan_swapped(flops, tokens_per_parameter=20.0):  # (tokens, parameters)
    n, d = plan(flops, tokens_per_parameter)
    return d, n


def plan_dividing_by_the_ratio(flops, tokens_per_parameter=20.0):  # D = N / r
    n = math.sqrt(flops * tokens_per_parameter / 6)
    return n, n / tokens_per_parameter


def plan_by_the_library(flops, tokens_per_parameter=20.0):  # course_lib's rule: 20 tokens, fixed
    n = math.sqrt(flops / model_costs.training_flops(1.0, model_costs.chinchilla_tokens(1.0)))
    return n, model_costs.chinchilla_tokens(n)


def blank(*args, **kwargs):
    raise NotImplementedError()


# ------------------------------------------------------------------------------------------ tests

RIGHT = [
    (check_gpt2_parameter_count, gpt2_parameter_count, 6),
    (check_adamw_training_bytes, adamw_bytes, 4),
    (check_compute_optimal_plan, plan, 6),
]


@pytest.mark.parametrize("check, answer, n", RIGHT, ids=lambda x: getattr(x, "__name__", str(x)))
def test_right_answers_pass(check, answer, n, capsys):
    check(answer)
    assert f"all {n} cases pass" in capsys.readouterr().out


@pytest.mark.parametrize("check", [c for c, *_ in RIGHT], ids=lambda c: c.__name__)
def test_blank_answers_say_not_written_yet_and_keep_the_hint_for_a_real_failure(check):
    with pytest.raises(ExerciseFailure, match="not written yet") as failure:
        check(blank)
    assert "hint" not in str(failure.value).lower()


WRONG = [
    (check_gpt2_parameter_count, count_without_positions, "case 1 of 6 (GPT-2 124M)"),
    (check_gpt2_parameter_count, count_untied, "case 1 of 6"),
    (check_gpt2_parameter_count, count_without_biases, "case 1 of 6"),
    (check_gpt2_parameter_count, count_by_the_library, "uses the library"),
    (check_adamw_training_bytes, adamw_bytes_one_moment, "case 1 of 4 (1 parameters)"),
    (check_adamw_training_bytes, adamw_bytes_states_only, "case 1 of 4"),
    (check_adamw_training_bytes, adamw_bytes_in_bits, "case 1 of 4"),
    (check_adamw_training_bytes, adamw_bytes_by_the_library, "uses the library"),
    (check_compute_optimal_plan, plan_without_the_6, "case 1 of 6 (1e21 FLOPs"),
    (check_compute_optimal_plan, plan_ignoring_the_ratio, "case 5 of 6 (1e21 FLOPs at 100 tokens"),
    (check_compute_optimal_plan, plan_without_the_square_root, "case 1 of 6"),
    (check_compute_optimal_plan, plan_swapped, "case 1 of 6"),
    (check_compute_optimal_plan, plan_dividing_by_the_ratio, "case 1 of 6"),
    (check_compute_optimal_plan, plan_by_the_library, "uses the library"),
]
WRONG_IDS = [f"{check.__name__}-{answer.__name__}" for check, answer, _ in WRONG]
MUTANTS = WRONG  # listed by tests/test_exercise_audit.py


@pytest.mark.parametrize("check, answer, case", WRONG, ids=WRONG_IDS)
def test_wrong_answers_fail_on_the_case_that_exposes_them(check, answer, case):
    with pytest.raises(ExerciseFailure) as err:
        check(answer)
    assert case in str(err.value), f"{case!r} not in the feedback: {err.value}"


def test_the_plan_reference_reproduces_chinchilla():
    """70B parameters on 1.4T tokens is 20 tokens per parameter: the plan at its 6ND budget gives it back."""
    from course_lib.exercises.ch01 import _reference_compute_optimal_plan

    n, d = _reference_compute_optimal_plan(6 * 70e9 * 1.4e12)
    assert n == pytest.approx(70e9, rel=1e-9) and d == pytest.approx(1.4e12, rel=1e-9)
