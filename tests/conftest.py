"""Shared test settings."""

from __future__ import annotations

import os

import torch

# The course's tests use tiny models: on a small shared machine one thread is much faster than several
# fighting over the cores (measured here: about 17x for a tiny MLP training run with 2 threads vs 1).
torch.set_num_threads(int(os.environ.get("COURSE_TEST_THREADS", "1")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
