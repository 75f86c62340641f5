# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5.8 · Serving the real model: an HTTP server, latency and throughput
#
# A model behind an HTTP API can be used by any program in any language. `course_lib` has a small
# OpenAI-compatible server (`python -m course_lib serve --model smollm2`). This notebook
#
# 1. starts it as a separate process on this machine (127.0.0.1), and stops it however the notebook ends;
# 2. talks to it with a real HTTP client (`httpx`), first waiting for the whole answer, then streamed;
# 3. measures the **time to first token** and the **tokens per second** for 1, 4 and 8 requests at once;
# 4. uses those numbers to explain what production servers (vLLM, TGI, llama.cpp's server) add:
#    **continuous batching** and a **paged KV cache**.

# %% tags=["imports"]
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from course_lib import pick, seed_everything
from course_lib.compress import median_time
from course_lib.metrics import format_table
from course_lib.plots import use_course_style
from course_lib.serve import PortInUseError, ServerProcess
from course_lib.smollm2 import load_smollm2

use_course_style()
seed_everything(0)
torch.set_num_threads(1)

# %% [markdown]
# ## 5.8.1 Starting the server
#
# `ServerProcess` runs `python -m course_lib serve --model smollm2 --port <a free port>` as a child
# process, waits until `GET /v1/models` answers, and (as a context manager, or with `.stop()`) ends
# it. We keep it open across the next cells, so the notebook stops it explicitly at the end; if a
# cell fails before that, restarting the kernel ends the child too.

# %%
server = ServerProcess("smollm2").start()
print("server at", server.url, "running:", server.running())
print(httpx.get(server.url + "/v1/models").json())

# %% [markdown]
# A second server on the same port fails at once, before loading any weights, with a clear error:

# %%
try:
    ServerProcess("smollm2", port=server.port).start()
except PortInUseError as e:
    print("PortInUseError:", e)

# %% [markdown]
# ## 5.8.2 One request, whole and streamed
#
# The request body is OpenAI's chat format. Without streaming, the answer comes back in one JSON
# object when it is complete; `usage` counts the tokens.

# %%
MAX_TOKENS = pick(4, 32)
QUESTION = [{"role": "user", "content": "Name three things a news website publishes."}]
body = {"model": "smollm2", "messages": QUESTION, "max_tokens": MAX_TOKENS, "temperature": 0}
client = httpx.Client(base_url=server.url, timeout=600)
t0 = time.perf_counter()
answer = client.post("/v1/chat/completions", json=body).json()
whole_s = time.perf_counter() - t0
print(repr(answer["choices"][0]["message"]["content"]))
print(answer["usage"], f"in {whole_s:.2f} s")

# %% [markdown]
# With `"stream": true` the server sends **server-sent events**: one `data: {json}` line per piece
# of text as soon as it is generated, and `data: [DONE]` at the end. Here are the raw lines:

# %%
lines = []
with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
    for line in response.iter_lines():
        lines.append(line)
for line in lines[:4] + ["..."] + lines[-3:]:
    print(line[:140])

# %% [markdown]
# **Exercise 1.** Write `stream_text(lines)`: the answer that these lines carry. Keep only the
# `data: ` lines, stop at `data: [DONE]`, and join each chunk's `choices[...]["delta"]["content"]`
# (a chunk may have no content, or, for the usage chunk, no choices at all).

# %% tags=["exercise"]
def stream_text(lines):
    """Server-sent event lines of a streamed chat completion -> the answer's text."""
    ### BEGIN SOLUTION
    pieces = []
    for line in lines:
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            break
        for choice in json.loads(data).get("choices", []):
            pieces.append(choice.get("delta", {}).get("content") or "")
    return "".join(pieces)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05_real_llm import check_stream_text

check_stream_text(stream_text)

# %% [markdown]
# (The later cells do not call your functions, so that the notebook runs even before you write them;
# they use `json` and numpy directly, exactly as your functions do.)

# %% tags=["nbval-check-output"]
chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: ") and x != "data: [DONE]"]
streamed = "".join(c["delta"].get("content") or "" for chunk in chunks for c in chunk["choices"])
print("streamed text equals the whole answer:", streamed == answer["choices"][0]["message"]["content"])

# %% [markdown]
# ## 5.8.3 Latency and throughput under load
#
# Two numbers describe a chat server: the **time to first token** (TTFT: how long a user stares at
# an empty reply) and the **tokens per second** it delivers. One streamed request records its send
# time, the arrival of its first piece of text, its end, and its number of tokens:

# %%
def timed_request(prompt: str) -> dict:
    """One streamed request; times from time.perf_counter()."""
    req = {**body, "messages": [{"role": "user", "content": prompt}], "stream": True}
    req["stream_options"] = {"include_usage": True}
    start, first, tokens = time.perf_counter(), None, 0
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=req, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter()
    return {"start": start, "first": first, "end": time.perf_counter(), "tokens": tokens}


PROMPTS = [
    "Name three things a news website publishes.",
    "Give one tip for writing a clear headline.",
    "What is a central bank?",
    "Describe a football match in one sentence.",
    "What does a film critic do?",
    "Why do elections matter?",
    "What is a smartphone?",
    "Name a reason to read the news.",
]


def load_test(n: int) -> list[dict]:
    """n requests sent at the same moment, each from its own thread."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(timed_request, PROMPTS[:n]))


timed_request(PROMPTS[0])  # warm-up
runs = {n: load_test(n) for n in (1, 4, 8)}

# %% [markdown]
# **Exercise 2.** Write `percentile(values, p)`: the p-th percentile with linear interpolation
# (numpy's default), without calling `np.percentile`. Tail percentiles (p90, p99) are what service
# targets are written in, because the median hides the users who wait longest.

# %% tags=["exercise"]
def percentile(values, p):
    """The p-th percentile (0..100) of a list of numbers, interpolating linearly between sorted values."""
    ### BEGIN SOLUTION
    v = sorted(values)
    pos = (len(v) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05_real_llm import check_percentile

check_percentile(percentile)

# %% [markdown]
# **Exercise 3.** Write `throughput(starts, ends, n_tokens)`: the tokens per second the *server*
# delivered to a group of requests: all their tokens over the wall-clock time from the first send to
# the last finish.

# %% tags=["exercise"]
def throughput(starts, ends, n_tokens):
    """Tokens per second delivered to requests sent at ``starts`` and finished at ``ends`` (seconds)."""
    ### BEGIN SOLUTION
    return sum(n_tokens) / (max(ends) - min(starts))
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05_real_llm import check_throughput

check_throughput(throughput)

# %%
rows = []
for n, rs in runs.items():
    ttft = [r["first"] - r["start"] for r in rs]
    per_request = [r["tokens"] / (r["end"] - r["start"]) for r in rs]
    rows.append(
        {
            "concurrent requests": n,
            "TTFT p50 (s)": float(np.percentile(ttft, 50)),
            "TTFT p90 (s)": float(np.percentile(ttft, 90)),
            "tokens/s per request (median)": float(np.median(per_request)),
            "tokens/s, server total": sum(r["tokens"] for r in rs)
            / (max(r["end"] for r in rs) - min(r["start"] for r in rs)),
        }
    )
display(format_table(rows, floatfmt=".2f"))
total = {r["concurrent requests"]: r["tokens/s, server total"] for r in rows}
ttft50 = {r["concurrent requests"]: r["TTFT p50 (s)"] for r in rows}

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
for row, rs in enumerate(runs.values()):
    t0 = min(r["start"] for r in rs)
    for i, r in enumerate(rs):
        y = row * 10 + i
        ax.plot([r["start"] - t0, r["first"] - t0], [y, y], color="0.75", lw=3)
        ax.plot([r["first"] - t0, r["end"] - t0], [y, y], color="C0", lw=3)
ax.set_yticks([row * 10 + 3.5 for row in range(len(runs))], [f"{n} at once" for n in runs])
ax.set_xlabel("seconds after the requests were sent (grey: waiting for the first token, blue: streaming)")
ax.set_title("Requests queue for the one worker thread")
plt.show()

# %% [markdown]
# ## 5.8.4 Stopping it

# %%
client.close()
server.stop()
print("server running after stop():", server.running(), "| exit status:", server.process.returncode)

# %% [markdown]
# ## 5.8.5 What production servers add
#
# The table shows what this server does with concurrent requests: it runs them **one after another**
# on a single worker thread. The total tokens per second barely moves with 4 or 8 requests, while
# the time to first token grows with the queue:

# %%
print(f"tokens/s in total: 1 request {total[1]:.1f}, 4 at once {total[4]:.1f}, 8 at once {total[8]:.1f}")
print(f"median time to first token: 1 request {ttft50[1]:.2f} s, 8 at once {ttft50[8]:.2f} s")

# %% [markdown]
# **Continuous batching.** Generating one token for one sequence reads every weight of the model
# once; on a CPU or GPU, reading the weights, not the arithmetic, sets the speed of a small batch.
# So one forward pass for 8 sequences costs far less than 8 passes for one. Here is that measured
# on this machine: one new token each for B sequences (a decode step, without a cache, on a
# 16-token context).

# %%
model = load_smollm2("cpu")
step = {}
with torch.no_grad():
    for B in (1, 8):
        idx = torch.randint(0, model.config.vocab_size, (B, 16))  # (B, 16)
        step[B] = median_time(lambda idx=idx: model(idx), repeats=pick(2, 5), warmup=1)
print(f"one step for 1 sequence: {step[1] * 1000:.0f} ms; for 8 sequences: {step[8] * 1000:.0f} ms")
print(f"per sequence, batching 8 is {step[1] * 8 / step[8]:.1f} x cheaper than 8 separate steps")

# %% [markdown]
# A continuous-batching server (vLLM, TGI, llama.cpp's `--cont-batching`) keeps one running batch:
# at every step it adds the requests that have arrived and removes those that have finished, so no
# request waits for another to end. With the ratio just measured, the 8-request row above could
# deliver several times its total tokens/s, and each request's first token would come after one
# prefill, not after the whole queue.
#
# **Paged KV cache.** Each sequence in the batch keeps the keys and values of all its past tokens
# (chapter 2's KV cache). Per token, SmolLM2 stores:

# %%
c = model.config
kv_bytes = 2 * c.n_layer * c.kv_heads * c.head_dim * 4  # keys and values, every layer, float32
reserved = kv_bytes * c.block_size  # a cache sized for the longest possible sequence
used = kv_bytes * answer["usage"]["total_tokens"]  # what the first request of 5.8.2 used
print(f"KV cache: {kv_bytes / 1024:.0f} KiB per token; {reserved / 1e6:.0f} MB if reserved for {c.block_size} tokens")
print(f"the request of 5.8.2 ({answer['usage']['total_tokens']} tokens) used {used / 1e6:.1f} MB of that: {used / reserved:.2%}")

# %% [markdown]
# Reserving the full context for each request would waste nearly all of that memory, and memory,
# not compute, limits how many sequences can share a batch. A paged KV cache (vLLM's
# PagedAttention) stores the cache in small fixed-size pages allocated as a sequence grows, like an
# operating system's virtual memory, so the batch holds as many sequences as their *actual*
# lengths allow (and sequences sharing a prompt can share its pages).
#
# The course's server stays simple on purpose: it is the reference these systems improve on, and the
# numbers above are the starting point for measuring them.
