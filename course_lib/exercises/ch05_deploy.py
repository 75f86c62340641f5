"""Self-checks for notebooks 5.4 and 5.5 (compression, deployment): the distillation loss, a digit
picture turned into the model's input, and dynamic batching of requests.

The references are :func:`course_lib.compress.distillation_loss` and :func:`course_lib.deploy.read_images`;
dynamic batching, which no course_lib module does, is checked against the rule written out below.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from course_lib.compress import distillation_loss
from course_lib.deploy import read_images
from course_lib.exercises import Case, check_function, require_own_code

# ----------------------------------------------------------------------------- the distillation loss


def _logits_case(
    label: str,
    batch: int,
    classes: int,
    seed: int,
    temperature: float,
    alpha: float,
    teacher_scale: float = 3.0,
) -> Case:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=g)  # (B, C)
    teacher = teacher_scale * torch.randn(batch, classes, generator=g)  # (B, C) a more confident model
    labels = torch.randint(0, classes, (batch,), generator=g)  # (B,)
    return Case(label, (student, teacher, labels, temperature, alpha))


def _reference_distillation(student, teacher, labels, temperature, alpha) -> torch.Tensor:
    return distillation_loss(student, teacher, labels, temperature=temperature, alpha=alpha)


def check_distillation_loss(fn) -> None:
    """``fn(student_logits, teacher_logits, labels, T, alpha) -> loss``: logits (B, C), labels (B,);
    ``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE(student, labels)``, p = softmax(z / T),
    the KL summed over classes and averaged over the batch."""
    require_own_code(fn, "distillation_loss")
    cases = [
        _logits_case("B=4, C=10, T=2, alpha=0.5 (the notebook's setting)", 4, 10, 0, 2.0, 0.5),
        _logits_case("T=1: the plain softmax", 5, 3, 1, 1.0, 0.5),
        _logits_case("alpha=1: the teacher's probabilities only", 6, 10, 2, 4.0, 1.0),
        _logits_case("alpha=0: plain cross-entropy on the labels", 3, 7, 3, 2.0, 0.0),
        _logits_case("a high temperature, T=5, alpha=0.9", 8, 10, 4, 5.0, 0.9),
        _logits_case("one example of two classes", 1, 2, 5, 3.0, 0.3),
    ]
    check_function(
        "distillation_loss",
        fn,
        _reference_distillation,
        cases,
        atol=1e-5,
        rtol=1e-4,
        hint="divide both models' logits by T before the softmax; the KL has the teacher's probabilities "
        "as the target and is summed over classes, then averaged over the examples (F.kl_div's default "
        "'mean' also divides by the number of classes); do not forget the factor T^2, and weigh the two "
        "terms with alpha and 1 - alpha",
    )


# ----------------------------------------------------------------------------- a picture as the model's input


def _reference_digit(page: np.ndarray) -> torch.Tensor:
    """What the command-line predictor feeds the digit models: ``deploy.read_images`` on a PNG file."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "page.png"
        Image.fromarray(page).save(path)
        return read_images([path], 8)[0, 0]  # (8, 8)


def _page(label: str, height: int, width: int, seed: int, ink_is_dark: bool, stroke: tuple) -> Case:
    """A grey page with a rectangle of ink, some noise, and ink dark on white or bright on black."""
    rng = np.random.default_rng(seed)
    page = np.zeros((height, width))
    top, bottom, left, right = stroke
    page[top:bottom, left:right] = 1.0  # the ink
    page = np.clip(page * 0.85 + 0.1 * rng.random((height, width)), 0, 1)  # ink and paper are not pure
    if ink_is_dark:
        page = 1.0 - page
    return Case(label, (np.round(page * 255).astype(np.uint8),))


def check_to_digit(fn) -> None:
    """``fn(page) -> image``: a uint8 grey page (H, W), 255 = white, H and W multiples of 8, to the
    (8, 8) float tensor in [0, 1] the digit models read: block means, 1 = ink."""
    require_own_code(fn, "to_digit")
    cases = [
        _page("a 64 x 64 page, dark ink on white", 64, 64, 0, True, (8, 56, 24, 40)),
        _page("bright ink on black: no inversion", 64, 64, 1, False, (16, 48, 8, 40)),
        _page("a 16 x 24 page: blocks of 2 x 3 pixels", 16, 24, 2, True, (0, 16, 9, 15)),
        _page("a tall 40 x 16 page, ink in one corner", 40, 16, 3, True, (0, 15, 0, 6)),
        _page("an 8 x 8 page: one pixel per block", 8, 8, 4, True, (2, 6, 3, 5)),
    ]
    check_function(
        "to_digit",
        fn,
        _reference_digit,
        cases,
        atol=1.0 / 255,  # one grey level: PIL's resize rounds each block to a whole grey level
        rtol=0,
        hint="each output pixel is the mean of a block of (H / 8) x (W / 8) page pixels (reshape so that "
        "the rows and columns of a block get their own axes, and average over those two); scale to [0, 1] "
        "with / 255; a page whose mean is above one half is dark ink on paper and is inverted (1 - x); "
        "return a float32 torch tensor of shape (8, 8)",
    )


# ----------------------------------------------------------------------------- dynamic batching


def reference_dynamic_batches(arrivals: Sequence[float], max_batch: int, max_wait: float) -> list[list[int]]:
    """Requests, by arrival time (ascending), grouped the way a dynamic-batching server groups them."""
    batches: list[list[int]] = []
    for i, t in enumerate(arrivals):
        if batches:
            first = arrivals[batches[-1][0]]  # the batch opened when its first request arrived
            if len(batches[-1]) < max_batch and t <= first + max_wait:
                batches[-1].append(i)
                continue
        batches.append([i])
    return batches


def check_dynamic_batches(fn) -> None:
    """``fn(arrivals, max_batch, max_wait) -> batches``: arrival times in ms (ascending); a batch opens
    when a request arrives and no batch is open, and closes when it holds ``max_batch`` requests or
    ``max_wait`` ms after it opened; a list of batches, each the list of its requests' indices."""
    require_own_code(fn, "dynamic_batches")
    rng = np.random.default_rng(0)
    busy = np.cumsum(rng.exponential(2.0, 40)).round(2).tolist()  # 40 requests, one every 2 ms on average
    cases = [
        Case("three quick requests, then one late one", ([0.0, 1.0, 2.0, 20.0], 8, 5.0)),
        Case("a burst larger than max_batch", ([0.0] * 7, 3, 10.0)),
        Case(
            "requests 4 ms apart: the wait counts from a batch's first request",
            ([0, 4, 8, 12, 16], 8, 5.0),
        ),
        Case("a request exactly max_wait after the first is still taken", ([0.0, 4.0, 5.0, 9.0], 8, 5.0)),
        Case("max_batch = 1: no batching at all", ([0.0, 0.5, 1.0], 1, 5.0)),
        Case("max_wait = 0: only simultaneous requests share a batch", ([0.0, 0.0, 1.0, 1.0, 1.0], 8, 0.0)),
        Case("40 requests at random times, max_batch 4, max_wait 5 ms", (busy, 4, 5.0)),
        Case("one request", ([3.0], 4, 5.0)),
    ]
    check_function(
        "dynamic_batches",
        fn,
        reference_dynamic_batches,
        cases,
        hint="go through the requests in order; a request joins the open batch only if that batch holds "
        "fewer than max_batch requests and the request arrives no later than max_wait after the batch's "
        "first request (not after the previous request); otherwise it opens a new batch. Return lists of "
        "indices, not times",
    )
