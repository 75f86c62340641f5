"""Build, once, the cached models that several notebooks load, before the notebooks run in parallel.

Notebooks load chapter 3's pretrained BBC GPT, chapter 5's ready-made classifiers and SmolLM2's float32
weights from the course cache, and build them when they are missing. Two notebooks that find one missing
at the same moment would both train it (and the second trainer would be refused the run's lock), so
tools/run_checks.sh runs this first: it builds what is missing, in the current mode (COURSE_FAST), and
only loads what is there (seconds).
"""

from __future__ import annotations

import time

from course_lib import pretrained, ready_models, smollm2


def main() -> None:
    for name, build in [
        ("BBC GPT (notebook 3.6's recipe)", lambda: pretrained.bbc_gpt(progress=False, device="cpu")),
        ("digit CNN (chapter 5)", ready_models.digit_cnn),
        ("BBC topic classifier (chapter 5)", lambda: ready_models.bbc_topic_classifier(progress=False)),
        ("SmolLM2-135M-Instruct, float32", lambda: smollm2.load_smollm2("cpu")),
    ]:
        t0 = time.perf_counter()
        build()
        print(f"warm cache: {name} ready in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
