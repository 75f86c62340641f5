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
# # 5.5 · Deployment, and where the field goes next
#
# The last step of the development pipeline of chapter 1 is to get a trained model out of the
# notebook and into something other people or programs can call. This notebook takes the two
# classifiers of notebook 5.2 through the usual steps:
#
# 1. save a model as a self-describing folder and load it back for inference, safely;
# 2. call it from the command line, preparing a picture as the training images were (an exercise);
# 3. export the computation graph so it runs without the Python class (`torch.export`, ONNX);
# 4. batch texts of different lengths (an exercise: padding), and measure batched inference:
#    latency and throughput; group requests as a server does (an exercise: dynamic batching);
# 5. what a serving setup adds around the model.
#
# It closes the course with a short look at where large models are heading.

# %% tags=["imports"]
import json
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from PIL import Image

from course_lib import cache_dir, display_path, pick, ready_models, seed_everything
from course_lib.compress import measure_latency, median_time, quantize_dynamic_int8
from course_lib.deploy import (
    batched_throughput,
    encode_texts,
    export_onnx,
    export_torch,
    load_exported,
    load_for_inference,
    onnx_available,
    predict_proba,
    save_for_inference,
)
from course_lib.metrics import format_table
from course_lib.plots import use_course_style

use_course_style()
seed_everything(0)
torch.set_num_threads(1)  # timings on one CPU thread, as in notebook 5.4

# %% [markdown]
# ## 5.5.1 Saving a model for inference
#
# A training checkpoint (chapter 3) holds everything needed to *resume training*: optimizer state,
# step counters, random states. Inference needs less, and something else: a description of the
# architecture, so a program that has never seen the training code can rebuild the model.
# `course_lib.deploy.save_for_inference` writes a folder with
#
# - `model.pt`: the weights only (the `state_dict`);
# - `config.json`: which architecture, its arguments, the class labels and anything else needed to
#   use it (for text, the maximum length);
# - `tokenizer.json` for text models.
#
# Before writing, it rebuilds the model from the config and checks that the weights fit, so a folder
# that would not load is never written. We save chapter 3's digit CNN this way:

# %%
digits_bundle = ready_models.digit_cnn()
x_all, y_all, dsplits = ready_models.digit_data()
x_test, y_test = dsplits.take(x_all).test, dsplits.take(y_all).test
folder = cache_dir("apps", "deploy-demo", "digit-cnn")
config = {"architecture": "DigitCNN", "kwargs": digits_bundle.config["kwargs"], "labels": digits_bundle.labels}
save_for_inference(digits_bundle.model, folder, config)
for f in sorted(folder.iterdir()):
    print(f"{f.name:<12} {f.stat().st_size:>8,} bytes")
print("config.json:", json.loads((folder / "config.json").read_text()))

# %% [markdown]
# `load_for_inference` reads the config, builds the architecture and loads the weights with
# `torch.load(..., weights_only=True)`. The flag matters: a `.pt` file is a Python *pickle*, and
# unpickling an arbitrary file can run arbitrary code. With `weights_only=True` PyTorch accepts only
# tensors and plain containers and refuses anything else, so opening a model file from elsewhere
# cannot execute code. The loaded model must give exactly the original's outputs:

# %% tags=["nbval-check-output"]
loaded = load_for_inference(folder, device="cpu")
same = torch.equal(predict_proba(loaded, x_test), predict_proba(digits_bundle, x_test))
print("architecture:", loaded.config["architecture"], "| labels:", " ".join(loaded.labels))
print("the loaded model gives identical probabilities:", same)
print("in eval mode (dropout off):", not loaded.model.training)

# %% [markdown]
# The MiniLM topic classifier of notebook 5.2 is already such a folder, with the WordPiece tokenizer
# inside; `ready_models.bundle_dir` says where:

# %%
topic_dir = ready_models.bundle_dir("bbc-topics")
topic_bundle = load_for_inference(topic_dir, device="cpu") if (topic_dir / "config.json").is_file() \
    else ready_models.bbc_topic_classifier()
for f in sorted(topic_dir.iterdir()):
    print(f"{f.name:<16} {f.stat().st_size / 1e6:>8.2f} MB")

# %% [markdown]
# ## 5.5.2 From the command line
#
# With the folder, a prediction needs no notebook and no training code: `course_lib` has a small
# command-line predictor, `python -m course_lib predict FOLDER TEXT ...`, which prints the most likely
# labels with their probabilities. In a terminal:
#
# ```bash
# python -m course_lib predict FOLDER "Shares fell sharply in Tokyo."
# ```
#
# with the bundle's folder for `FOLDER` (the cell prints it). Here it runs as a separate process,
# exactly as from a terminal:

# %%
print("FOLDER =", display_path(topic_dir))
texts = ["Shares fell sharply in Tokyo after the bank raised interest rates.",
         "The midfielder signed a three-year contract with the club."]
result = subprocess.run([sys.executable, "-m", "course_lib", "predict", str(topic_dir), *texts, "--top", "2",
                         "--device", "cpu"], capture_output=True, text=True, check=True)
print(result.stdout)

# %% [markdown]
# An image model reads image files the same way (`deploy.read_images`): a picture is turned grey,
# shrunk to the digits' 8 x 8 pixels and, when the ink is dark on a light page, inverted so that ink
# is bright, as in `load_digits`. A deployed model must receive its inputs prepared exactly as its
# training inputs were: it cannot tell that a picture was scaled or inverted differently, and it
# answers anyway.
#
# ### Exercise 5.7 — a picture as the model's input
# Write `to_digit(page)`. `page` is a grey picture as a uint8 NumPy array of shape (H, W), 0 = black
# and 255 = white, with H and W multiples of 8. Return the float32 torch tensor of shape (8, 8) that
# the digit models read: each pixel the mean of one (H/8) x (W/8) block of the page, scaled to
# [0, 1]; if the result's mean is above one half (dark ink on a light page), return 1 minus it, so
# that ink is 1. The check compares with `course_lib.deploy.read_images` on a PNG file of the page,
# to one grey level (1/255: PIL rounds each block to a whole grey level).

# %% tags=["exercise"]
def to_digit(page):
    """A uint8 grey page (H, W), 255 = white -> (8, 8) float32 tensor in [0, 1], 1 = ink."""
    ### BEGIN SOLUTION
    H, W = page.shape
    blocks = page.astype(np.float64).reshape(8, H // 8, 8, W // 8)  # (row block, row in it, col block, col in it)
    image = blocks.mean(axis=(1, 3)) / 255.0  # (8, 8), 1 = white
    if image.mean() > 0.5:  # a light page: dark ink on paper
        image = 1.0 - image
    return torch.tensor(image, dtype=torch.float32)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05_deploy import check_to_digit

check_to_digit(to_digit)

# %% [markdown]
# Two test digits saved as ordinary PNG files, dark on white, go to
# the digit CNN's folder from 5.5.1:

# %%
pngs = []
for i in range(2):
    page = np.round((1.0 - x_test[i, 0].numpy()) * 255).astype(np.uint8)  # dark ink on a white page
    png = cache_dir("apps", "deploy-demo") / f"digit_{i}.png"
    Image.fromarray(page).resize((64, 64), Image.Resampling.NEAREST).save(png)
    pngs.append(str(png))
result = subprocess.run([sys.executable, "-m", "course_lib", "predict", str(folder), *pngs, "--top", "2",
                         "--device", "cpu"], capture_output=True, text=True, check=True)
print(result.stdout)
print("true labels:", y_test[:2].tolist())

# %% [markdown]
# ## 5.5.3 Exporting the graph
#
# The folder still needs Python and `course_lib` to rebuild the model. **Exporting** records the
# computation itself, the operations and the weights, so it runs without the class that defined it:
#
# - `torch.export` (`deploy.export_torch`) traces the model into a graph saved as a `.pt2` file,
#   which any Python with PyTorch can load and run;
# - **ONNX** (`deploy.export_onnx`) is an open format that many runtimes read: ONNX Runtime on
#   servers and phones, in browsers, from C++, C#, Java or JavaScript.
#
# Both trace one example input. The batch size is marked as variable, so one export serves any
# number of images. A `.pt2` file is not as safe to open as the bundle: `torch.export.load`
# unpickles parts of it without `weights_only`, so a crafted file can run code. `load_exported`
# therefore opens only files marked `trusted=True`, such as one we have just written ourselves:

# %%
pt2 = export_torch(digits_bundle.model, x_test[:4], cache_dir("apps", "deploy-demo") / "digit_cnn.pt2")
exported = load_exported(pt2, trusted=True)  # a file we just wrote ourselves
print(f"{pt2.name}: {pt2.stat().st_size:,} bytes")

# %% tags=["nbval-check-output"]
with torch.no_grad():
    reference = digits_bundle.model(x_test)
print("torch.export, batch of", len(x_test), "(traced with 4): same outputs:",
      torch.allclose(exported(x_test), reference, atol=1e-5))

# %% [markdown]
# And ONNX, run with ONNX Runtime, which knows nothing about PyTorch (the ONNX packages are
# optional extras of the course; the cell says so if they are missing):

# %%
if onnx_available():
    import onnxruntime as ort

    onnx_path = export_onnx(digits_bundle.model, x_test[:4], cache_dir("apps", "deploy-demo") / "digit_cnn.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread, like PyTorch here
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input_0": x_test.numpy()})[0]
    print(f"{onnx_path.name}: {onnx_path.stat().st_size:,} bytes; ONNX Runtime matches PyTorch:",
          np.allclose(onnx_out, reference.numpy(), atol=1e-5))
    batch64 = x_test[:64]
    cnn_t_torch = measure_latency(digits_bundle.model, batch64, repeats=pick(fast=3, full=50))
    cnn_t_ort = median_time(lambda: session.run(None, {"input_0": batch64.numpy()}), repeats=pick(fast=3, full=50))
    print(f"a batch of 64 images, one thread: PyTorch {cnn_t_torch * 1e3:.2f} ms, ONNX Runtime {cnn_t_ort * 1e3:.2f} ms")
else:
    print("ONNX export skipped: pip install onnx onnxscript onnxruntime")

# %% [markdown]
# ### Exporting a text model
#
# Tracing follows the tensor operations. Python code that looks at tensor *values* cannot become
# part of a graph: the course's encoder and GPT check that every token id lies inside the
# vocabulary, an `if` on `input_ids.max()`, to give a clear message in a notebook. Those checks stay
# for eager use and step aside while a tracer runs (`torch.compiler.is_compiling()` is true then),
# so the graph holds the arithmetic only. Texts also differ in length, so both dimensions of the
# token ids are marked free to change (`dynamic_dims=(0, 1)`): batch size and length. We export
# the MiniLM topic classifier with two short example texts and run it on real articles:

# %%
recipe = ready_models.topic_recipe()
articles, _, tsplits = ready_models.bbc_topic_data(recipe)
example = encode_texts(topic_bundle, texts)  # the two sentences of 5.5.2, padded to the longer one
example = (example["input_ids"], example["attention_mask"])
topic_pt2 = export_torch(topic_bundle.model, example, cache_dir("apps", "deploy-demo") / "minilm_topics.pt2",
                         dynamic_dims=(0, 1))
topic_exported = load_exported(topic_pt2, trusted=True)
news = encode_texts(topic_bundle, [articles[i].body for i in tsplits.test][: pick(fast=4, full=16)])
news = (news["input_ids"], news["attention_mask"])
print(f"{topic_pt2.name}: {topic_pt2.stat().st_size / 1e6:.1f} MB; traced with {tuple(example[0].shape)}, "
      f"run on {tuple(news[0].shape)} (texts x tokens)")

# %% tags=["nbval-check-output"]
with torch.no_grad():
    reference_logits = topic_bundle.model(*news)[0]
    exported_logits = topic_exported(*news)[0]
print("torch.export, other batch size and length than traced: same outputs:",
      torch.allclose(exported_logits, reference_logits, atol=1e-4))
print("same labels:", torch.equal(exported_logits.argmax(-1), reference_logits.argmax(-1)))

# %% [markdown]
# The same model as an ONNX file, run by ONNX Runtime and timed against PyTorch on the same batch
# of articles:

# %%
if onnx_available():
    topic_onnx = export_onnx(topic_bundle.model, example, cache_dir("apps", "deploy-demo") / "minilm_topics.onnx",
                             dynamic_dims=(0, 1))
    topic_session = ort.InferenceSession(str(topic_onnx), options, providers=["CPUExecutionProvider"])
    feed = {"input_0": news[0].numpy(), "input_1": news[1].numpy()}
    onnx_logits = topic_session.run(None, feed)[0]
    print(f"{topic_onnx.name}: {topic_onnx.stat().st_size / 1e6:.1f} MB; ONNX Runtime matches PyTorch:",
          np.allclose(onnx_logits, reference_logits.numpy(), atol=1e-4))
    topic_t_torch = measure_latency(topic_bundle.model, news, repeats=pick(fast=1, full=10))
    topic_t_ort = median_time(lambda: topic_session.run(None, feed), repeats=pick(fast=1, full=10))
    print(f"{len(news[0])} articles of {news[0].shape[1]} tokens, one thread: PyTorch {topic_t_torch * 1e3:.0f} ms, "
          f"ONNX Runtime {topic_t_ort * 1e3:.0f} ms (ratio {topic_t_torch / topic_t_ort:.2f})")
else:
    print("ONNX export skipped: pip install onnx onnxscript onnxruntime")

# %%
if onnx_available():
    display(Markdown(
        f"In this run ONNX Runtime takes {cnn_t_ort / cnn_t_torch:.2f}x PyTorch's time for the CNN and "
        f"{topic_t_ort / topic_t_torch:.2f}x for MiniLM (below 1: faster)."
    ))

# %% [markdown]
# Whether an exported graph is also faster depends on where the time goes. A small CNN spends
# much of each call on fixed overheads, which fused kernels can remove; MiniLM spends nearly all of
# it in large matrix products, which PyTorch and ONNX Runtime both hand to optimised kernels. Where
# the times are close, the portable file is the gain, not the speed.
#
# ## 5.5.4 Batched inference
#
# Every call to a model has a fixed cost (Python, dispatching kernels, reading the weights from
# memory) on top of the arithmetic per item. Sending many inputs in one batch shares that cost:
# **throughput** (items per second) rises with the batch size, until the arithmetic dominates.
# The price is **latency**: an item waits for its whole batch.
#
# Texts make batching less simple than images: they differ in length, and a tensor is a rectangle.
# A batch is padded to its longest text, and an **attention mask** tells the model which positions
# are real tokens (`deploy.encode_texts` does this for the bundles).
#
# ### Exercise 5.8 — a batch of texts
# Write `pad_batch(id_lists, pad_id)`: `id_lists` is a list of token-id lists of different lengths.
# Return `(input_ids, attention_mask)`, two `torch.long` tensors of shape (B, T) with T the length
# of the longest list: each row holds its tokens first, then `pad_id` up to T; the mask is 1 on real
# tokens and 0 on padding. The check compares with `course_lib.lm_data.pad_collate`.

# %% tags=["exercise"]
def pad_batch(id_lists, pad_id):
    """Token-id lists -> (input_ids, attention_mask), each (B, T), padded on the right."""
    ### BEGIN SOLUTION
    T = max(len(ids) for ids in id_lists)
    input_ids = torch.full((len(id_lists), T), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(id_lists), T), dtype=torch.long)  # (B, T)
    for b, ids in enumerate(id_lists):
        input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[b, : len(ids)] = 1
    return input_ids, attention_mask
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05 import check_pad_batch

check_pad_batch(pad_batch)

# %% [markdown]
# `deploy.batched_throughput` times each batch size; the texts are padded to the full 128 tokens,
# as a server with a fixed input shape would:

# %%
images = x_test.repeat(4, 1, 1, 1)[: pick(fast=64, full=512)]  # enough images for the largest batch
cnn_rows = batched_throughput(digits_bundle.model, images, batch_sizes=pick(fast=(1, 64), full=(1, 8, 64, 512)),
                              repeats=pick(fast=2, full=20))
batch = encode_texts(topic_bundle, [articles[i].body for i in tsplits.test][:pick(fast=8, full=64)])
pad = recipe.max_length - batch["input_ids"].shape[1]  # pad every text to the full length, as a server would
text_inputs = (F.pad(batch["input_ids"], (0, pad)), F.pad(batch["attention_mask"], (0, pad)))
text_sizes = pick(fast=(1, 8), full=(1, 4, 16, 64))
topic_rows = batched_throughput(topic_bundle.model, text_inputs, batch_sizes=text_sizes, repeats=pick(fast=1, full=3))
int8_rows = batched_throughput(quantize_dynamic_int8(topic_bundle.model), text_inputs, batch_sizes=text_sizes,
                               repeats=pick(fast=1, full=3))
table = [{"model": name, "batch size": row["batch_size"], "latency ms": row["latency_ms"],
          "items per second": round(row["items_per_s"])}
         for name, rows in (("digit CNN (images)", cnn_rows), ("MiniLM classifier fp32 (texts)", topic_rows),
                            ("MiniLM classifier int8 (texts)", int8_rows)) for row in rows]
format_table(table).show()
print(f"texts of {recipe.max_length} tokens; one CPU thread; latency = median time per batch")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for name, rows in (("digit CNN", cnn_rows), ("MiniLM fp32", topic_rows), ("MiniLM int8", int8_rows)):
    sizes = [r["batch_size"] for r in rows]
    ax1.plot(sizes, [r["items_per_s"] for r in rows], "o-", label=name)
    ax2.plot(sizes, [r["latency_ms"] for r in rows], "o-", label=name)
for ax, label in ((ax1, "items per second"), (ax2, "latency per batch (ms)")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(label)
    ax.legend()
ax1.set_title("Throughput grows with the batch...")
ax2.set_title("...and so does the wait for each batch")
plt.show()

# %%
def gain(rows: list[dict]) -> float:
    """Throughput at the largest batch over throughput at batch size 1."""
    return rows[-1]["items_per_s"] / rows[0]["items_per_s"]


int8_gain = [q["items_per_s"] / f["items_per_s"] for q, f in zip(int8_rows, topic_rows)]
display(Markdown(
    f"In this run batching from 1 to {cnn_rows[-1]['batch_size']} multiplies the CNN's throughput by "
    f"{gain(cnn_rows):.1f}, and from 1 to {topic_rows[-1]['batch_size']} MiniLM's by {gain(topic_rows):.1f}; int8 "
    f"changes MiniLM's throughput by {min(int8_gain):.1f}x to {max(int8_gain):.1f}x across the batch sizes."
))

# %% [markdown] tags=["answer", "points=2"]
# ### Question 5.5a — why batching did not pay here
# The table above was measured on a shared CPU. Why does a larger batch leave MiniLM's throughput at about
# 3 texts per second, when a server on a GPU batches precisely to raise throughput? What does int8 buy
# instead? (Your own numbers will differ; read the pattern.)
#
# ### BEGIN SOLUTION
# MiniLM's latency grows in proportion to the batch: 344 ms for one text, 1,310 ms for 4, 5,350 ms for 16
# and 20,400 ms for 64, so its throughput stays at 3 texts per second (a gain of 1.1 from 1 to 64). One
# text of 128 tokens already gives matrix products large enough to keep the CPU's few cores busy, so a
# batch only queues more of the same arithmetic; a GPU has thousands of arithmetic units that one text
# leaves idle, and there a batch fills them. The digit CNN is so small that one image (0.138 ms) is mostly
# fixed cost per call, so a batch of 8 raised its throughput from 7,228 to 10,795 images per second; larger
# batches did not help (3,667 at 64, 4,705 at 512), timings a shared machine makes noisy. int8 helps MiniLM
# because its matrix products read a quarter of the bytes of fp32 and use integer instructions: 198 ms
# instead of 344 ms for one text, 1.4 to 1.8 times the throughput across the batch sizes.
#
# Rubric: 1 point for reading MiniLM's latency as proportional to the batch (344 ms to 20,400 ms, about 3
# texts per second) and explaining it by a CPU already kept busy by one text; 1 point for int8's gain (1.4
# to 1.8 times) with a reason, or for the CNN's gain up to a batch of 8.
# ### END SOLUTION

# %% [markdown]
# How to read it: for the small CNN the fixed cost per call is much of the work, so batching
# raises the throughput until the arithmetic dominates. For MiniLM each text is already a lot of
# arithmetic (6 layers over 128 tokens), so batching gains less, while int8 (notebook 5.4) makes
# the arithmetic itself cheaper at every batch size. These are medians on a CPU that may be busy
# with other work: a batch size whose figure breaks the trend is noise until the cell is rerun.
# Servers use **dynamic batching**: they collect the requests that arrive within a few milliseconds
# and run them together, trading a small, bounded wait for much higher throughput.
#
# ### Exercise 5.9 — dynamic batching
# Write `dynamic_batches(arrivals, max_batch, max_wait)`. `arrivals` lists the arrival times of
# requests in milliseconds, in increasing order. A batch opens when a request arrives and no batch
# is open; it closes, and goes to the model, as soon as it holds `max_batch` requests or `max_wait`
# ms after it opened (a request arriving exactly then still joins). Return the batches as lists of
# the requests' indices, e.g. `[[0, 1, 2], [3]]`. The check runs eight cases, among them 40
# requests at random times, against the rule written out in `course_lib.exercises.ch05_deploy`.

# %% tags=["exercise"]
def dynamic_batches(arrivals, max_batch, max_wait):
    """Arrival times (ms, ascending) -> batches of request indices, each closed when full or max_wait after it opened."""
    ### BEGIN SOLUTION
    batches = []
    opened_at = None  # arrival time of the open batch's first request
    for i, t in enumerate(arrivals):
        if batches and len(batches[-1]) < max_batch and t - opened_at <= max_wait:
            batches[-1].append(i)  # joins the open batch
        else:
            batches.append([i])  # opens a new batch
            opened_at = t
    return batches
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05_deploy import check_dynamic_batches

check_dynamic_batches(dynamic_batches)

# %% [markdown]
# The two settings pull against each other: a longer `max_wait` fills batches (throughput) and makes
# the first request of each batch wait longer (latency); `max_batch` caps the wait under heavy load,
# when batches fill before the time is up.
#
# ## 5.5.5 Around the model
#
# A deployed model is a small part of a deployed system. Common pieces:
#
# - **A serving layer** that loads the model once and answers requests over HTTP or gRPC:
#   TorchServe or a small web framework for PyTorch models, ONNX Runtime or NVIDIA Triton for
#   exported graphs, TensorFlow Serving for TensorFlow models.
# - **Pinned versions**: the library versions and the bundle's `config.json` travel with the model;
#   an export is re-checked against the original (as above) whenever either changes.
# - **Measured latency at the expected batch size and hardware**, as in 5.5.4, rather than
#   assumed.
# - **Input checks and monitoring**: notebook 5.2 showed a model confidently classifying noise.
#   Logging what the model is sent and how confident it is reveals when the inputs drift away from
#   the training data.
# - **Privacy and access**: the inputs may be personal data, and the model file itself is an asset
#   that can be copied once it is shipped to a device.
#
# ## 5.5.6 Where the field goes next
#
# The articles this course follows end with a look ahead; these are the directions the field
# itself has been taking, each tied to a chapter of this course.
#
# - **Scale.** Loss falls predictably as parameters, data and compute grow together (Kaplan et al.,
#   2020); later work showed that many models were too large for their data and that tokens and
#   parameters should grow in step (Hoffmann et al., 2022). The arithmetic of chapter 1 is what
#   makes such runs cost millions.
# - **Multimodality.** The same transformer blocks read image patches and audio frames as tokens.
#   CLIP (Radford et al., 2021) trained text and image encoders into one vector space, the idea of
#   5.3 applied across modalities; current assistants accept images and speech as well as text.
# - **Efficiency.** 4-bit weights (GPTQ, Frantar et al., 2022; QLoRA, Dettmers et al., 2023),
#   distilled models such as DistilBERT (Sanh et al., 2019), low-rank adapters (chapter 4),
#   mixture-of-experts layers that use only part of the network per token (Switch Transformer,
#   Fedus et al., 2021) and attention kernels that avoid materialising the $T \times T$ matrix
#   (FlashAttention, Dao et al., 2022) all aim at the same thing as 5.4: more model per joule.
# - **Reliability and interpretability.** Models still answer confidently where they should not
#   (5.2's noise images; fluent but false text in 5.1). Understanding what the weights compute, well
#   beyond reading attention maps (chapter 2), is an active research area.
# - **Privacy and protection.** Language models can reproduce parts of their training data word for
#   word (Carlini et al., 2021). Federated learning (McMahan et al., 2017) keeps data on the devices
#   that hold it; differential privacy (DP-SGD, Abadi et al., 2016) bounds what a model can reveal
#   about any single training example; watermarking and access control protect the models themselves.
# - **Other generative models and learning from feedback.** GANs (Goodfellow et al., 2014), VAEs
#   (Kingma and Welling, 2014) and diffusion models (Ho et al., 2020) generate images; reinforcement
#   learning, from game-playing agents (DQN, Mnih et al., 2015) to learning from human preferences
#   (Ouyang et al., 2022), shapes how chat models answer, a step beyond chapter 4's instruction
#   tuning.
#
# ## Summary
#
# - An inference bundle is weights plus a config that rebuilds the architecture; loading with
#   `weights_only=True` keeps model files from running code (a `.pt2` graph is opened only when
#   trusted). The loaded model, the command-line
#   predictor, the `torch.export` graph and the ONNX file all gave the original's outputs.
# - Batching raises throughput at the cost of latency; how much depends on how much arithmetic each
#   item needs, so it has to be measured for each model and machine. Texts of different lengths are
#   padded to a rectangle, with a mask for the real tokens (an exercise); a server forms batches from
#   requests as they arrive, within a bounded wait (another).
# - A deployed model must be fed inputs prepared exactly as its training inputs were (the exercise
#   on pictures).
# - Serving adds versioning, monitoring and access control around the model.
