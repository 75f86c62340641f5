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
# # 5.4 · Making models smaller: quantization, distillation, pruning
#
# A model that works in a notebook may still be too big or too slow for where it has to run: a
# phone, a browser, a server answering thousands of requests a second. Three families of techniques
# shrink a trained model, and this notebook measures each one on this machine's CPU:
#
# 1. **quantization** stores weights (and computes) in 8-bit integers instead of 32-bit floats,
#    first by hand (an exercise), then with PyTorch on four of the course's models;
# 2. **knowledge distillation** trains a small *student* model to imitate a large *teacher* (an
#    exercise: its loss);
# 3. **pruning** sets the least important weights to zero (an exercise), or removes whole neurons.
#
# Every table reports size, speed and the accuracy change, because a compression that costs too
# much accuracy is no compression at all.

# %% tags=["imports"]
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from torch.utils.data import DataLoader, TensorDataset

from course_lib import pick, pretrained, ready_models, seed_everything
from course_lib.compress import (
    distill,
    magnitude_prune,
    measure_latency,
    model_size_bytes,
    prune_mlp_neurons,
    quantize_dynamic_int8,
    quantize_linears,
    quantize_tensor_int8,
    sparsity,
)
from course_lib.deploy import encode_texts
from course_lib.display import Table
from course_lib.layers import num_parameters
from course_lib.lm_data import get_batch
from course_lib.metrics import accuracy, format_table
from course_lib.mlp_cnn import MLP
from course_lib.plots import use_course_style

use_course_style()
seed_everything(0)
torch.set_num_threads(1)  # every latency below is for one CPU thread: comparable, and fair to a shared machine

# %% [markdown]
# ## 5.4.1 The models and the yardsticks
#
# Four models of this course, from tiny to the largest we have:
#
# - an **MLP** 64-512-512-10 on the 8x8 digits, trained here in a few seconds (it is also the
#   teacher of section 5.4.3);
# - chapter 3's **digit CNN** (`ready_models.digit_cnn()`, as in notebook 5.2);
# - the **MiniLM topic classifier** of notebook 5.2 (`ready_models.bbc_topic_classifier()`; the table of
#   5.4.2 counts its parameters);
# - chapter 3's **BBC News GPT** (`pretrained.bbc_gpt()`).
#
# Size is the number of bytes `torch.save` writes for the weights (`compress.model_size_bytes`);
# latency is the median time of repeated forward passes (`compress.measure_latency`). All models
# train with one loop, `compress.distill`; with `alpha=0` and no teacher it is plain cross-entropy
# training.

# %%
x_all, y_all, dsplits = ready_models.digit_data()
flat = x_all.flatten(1)  # (N, 64): the MLPs read flat pixels
(x_train, x_val, x_test), (y_train, y_val, y_test) = dsplits.take(flat), dsplits.take(y_all)
epochs = pick(fast=3, full=40)


def loader(x: torch.Tensor, y: torch.Tensor, seed: int) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def digit_accuracy(model: torch.nn.Module, x: torch.Tensor = x_test) -> float:
    return accuracy(y_test, model.eval()(x).argmax(-1))


torch.manual_seed(0)
teacher = MLP([64, 512, 512, 10])
distill(None, teacher, loader(x_train, y_train, 0), epochs=epochs, lr=1e-3, alpha=0.0)
cnn = ready_models.digit_cnn().model
print(f"MLP: {num_parameters(teacher):,} parameters, test accuracy {digit_accuracy(teacher):.3f}")
print(f"CNN: {num_parameters(cnn):,} parameters, test accuracy {digit_accuracy(cnn, dsplits.take(x_all).test):.3f}"
      f" ({len(y_test)} test images: one image is {100 / len(y_test):.2f} percentage points)")

# %% [markdown]
# ## 5.4.2 Quantization
#
# A float32 weight takes 4 bytes; an int8 takes 1. **Symmetric int8 quantization** of a weight
# matrix gives each row (each output neuron) its own scale so that the row's largest weight maps to
# ±127:
#
# $$s_r = \frac{\max_j |W_{rj}|}{127}, \qquad q_{rj} = \operatorname{round}\!\left(\frac{W_{rj}}{s_r}\right) \in \{-127, \dots, 127\}, \qquad W_{rj} \approx s_r\, q_{rj}.$$
#
# The rounding error of each weight is at most half a step, $s_r / 2$. One scale per row rather than
# per matrix matters: a single large weight would otherwise coarsen the grid for every row.
#
# ### Exercise 5.4 — int8 by hand
# Write `quantize_int8(w)` for a float weight `w` of shape (rows, columns). Return `(q, scale)`: `q`
# an int8 tensor of the shape of `w`, `scale` a float tensor with one entry per row. A row of zeros
# would give a scale of 0 and a division by zero: use at least `torch.finfo(torch.float32).eps` as
# the scale. The check compares with `course_lib.compress.quantize_tensor_int8`.

# %% tags=["exercise"]
def quantize_int8(w):
    """Symmetric per-row int8: returns (q, scale) with w ~= q * scale[:, None]."""
    ### BEGIN SOLUTION
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).eps)  # (rows,)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (rows, columns)
    return q, scale
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05 import check_quantize_int8

check_quantize_int8(quantize_int8)

# %% [markdown]
# On a real weight, the first layer of the MLP (512 x 64), with the library's quantizer:

# %% tags=["nbval-check-output"]
w = teacher.layers[0].weight.detach()
q, scale = quantize_tensor_int8(w, axis=0)
err = (q.float() * scale[:, None] - w).abs()
print(f"weights {tuple(w.shape)}: {w.numel() * 4:,} bytes as float32, {q.numel() + scale.numel() * 4:,} as int8 + scales")
print("every error is at most half a step:", bool((err <= scale[:, None] / 2 + 1e-7).all()))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
ax1.hist(w.flatten().numpy(), bins=100)
ax1.set_title("weights of the first layer")
ax1.set_xlabel("value")
ax2.hist((err / w.abs().max()).flatten().numpy() * 1e3, bins=100)
ax2.set_title("rounding error, as a share of the largest weight")
ax2.set_xlabel("|error| / max |w|  (x 1/1000)")  # short tick labels: they do not run together
plt.show()
print(f"mean error {float(err.mean()):.2e}, mean |weight| {float(w.abs().mean()):.2e}: "
      f"about {float(err.mean() / w.abs().mean()):.1%} of a typical weight")

# %% [markdown]
# **Dynamic quantization** in PyTorch (`compress.quantize_dynamic_int8`) goes one step further:
# it stores every `Linear` weight this way *and* quantizes each layer's input on the fly, so the
# matrix product itself runs in int8 with int32 sums, then scales back to float. It needs no
# retraining and no calibration data. (PyTorch now recommends the separate `torchao` package for
# new code; this older API works in the installed version.) Applied to the four models:

# %%
recipe = ready_models.topic_recipe()
articles, topic_labels, tsplits = ready_models.bbc_topic_data(recipe)
topic_bundle = ready_models.bbc_topic_classifier()
test_texts = [articles[i].body for i in tsplits.test]
test_topics = topic_labels[tsplits.test]
topic_batch = encode_texts(topic_bundle, test_texts)  # token ids (N, T) and mask, at most 128 tokens


@torch.no_grad()
def topic_accuracy(model: torch.nn.Module) -> float:
    logits = torch.cat([model(topic_batch["input_ids"][i:i + 32], topic_batch["attention_mask"][i:i + 32])[0]
                        for i in range(0, len(test_texts), 32)])
    return accuracy(test_topics, logits.argmax(-1))


gpt, gpt_tokenizer = pretrained.bbc_gpt(device="cpu")
_, gpt_val = pretrained.bbc_tokens(pretrained.bbc_recipe(), gpt_tokenizer)
gx, gy = get_batch(gpt_val, pick(fast=4, full=32), gpt.config.block_size, torch.Generator().manual_seed(0),
                   device="cpu")


@torch.no_grad()
def gpt_val_loss(model: torch.nn.Module) -> float:
    return float(model.eval()(gx, gy)[1])


models = {  # name: (model, example input for timing, metric name, metric function)
    "MLP 64-512-512-10": (teacher, x_test[:64], "test accuracy", digit_accuracy),
    "digit CNN": (cnn, dsplits.take(x_all).test[:64], "test accuracy",
                  lambda m: digit_accuracy(m, dsplits.take(x_all).test)),
    "MiniLM topic classifier": (topic_bundle.model, (topic_batch["input_ids"][:8], topic_batch["attention_mask"][:8]),
                                "test accuracy", topic_accuracy),
    "BBC GPT": (gpt, gx[:8], "val loss (nats/token)", gpt_val_loss),
}
rows, quantized = [], {}
for name, (model, example, metric, score) in models.items():
    model.eval()
    int8 = quantize_dynamic_int8(model)
    quantized[name] = int8
    repeats = pick(fast=2, full=20) if "MiniLM" not in name else pick(fast=1, full=5)
    t32, t8 = (measure_latency(m, example, repeats=repeats) * 1e3 for m in (model, int8))
    s32, s8 = model_size_bytes(model), model_size_bytes(int8)
    m32, m8 = score(model), score(int8)
    rows.append({"model": name, "params": f"{num_parameters(model):,}", "fp32 MB": s32 / 1e6, "int8 MB": s8 / 1e6,
                 "smaller": f"{s32 / s8:.2f}x", "fp32 ms": t32, "int8 ms": t8, "faster": f"{t32 / t8:.2f}x",
                 "metric": metric, "fp32": m32, "int8": m8})
format_table(rows, floatfmt=".4g").show()
print("latency: median over repeated calls, one thread; batches of 64 images, 8 texts of up to 128 tokens, "
      "8 windows of 128 tokens")
quant_rows = rows

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
names = [r["model"] for r in rows]
pos = np.arange(len(rows))
ax.bar(pos - 0.2, [r["int8 MB"] / r["fp32 MB"] for r in rows], 0.4, label="size, int8 / fp32")
ax.bar(pos + 0.2, [r["int8 ms"] / r["fp32 ms"] for r in rows], 0.4, label="latency, int8 / fp32")
ax.axhline(1.0, color="k", lw=0.8)
ax.axhline(0.25, color="grey", lw=0.8, ls="--")
ax.set_xlim(-0.6, len(rows) + 0.5)  # room right of the bars for the line's label
ax.text(len(rows) - 0.45, 0.27, "4x\nsmaller", color="grey", ha="left", va="bottom", fontsize=8)
ax.set_xticks(pos, [name.replace(" ", "\n", 1) for name in names])  # long names on two lines: no overlap
ax.set_ylabel("int8 / fp32 (lower is better)")
ax.set_title("Dynamic int8 quantization, measured on this CPU")
ax.legend()
plt.show()

# %% [markdown]
# **Where the bytes of an int8 model go.** Dynamic quantization converts the weights of `Linear`
# layers only; everything else (embedding tables, convolutions, norms, biases) stays float32. Each
# model's int8 file, split by what its tensors hold:

# %%
def linear_weight_share(model: torch.nn.Module) -> float:
    """The share of a model's parameters that sit in Linear weights and are not also an embedding table."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    linear = {id(m.weight): m.weight.numel() for m in model.modules()
              if isinstance(m, torch.nn.Linear) and id(m.weight) not in embedding_ids}
    return sum(linear.values()) / num_parameters(model)


def stored_bytes(model: torch.nn.Module) -> tuple[int, int, str, int]:
    """(int8 weight bytes, float tensor bytes, the largest float tensor's name, its bytes) of a state_dict."""
    int8_bytes, float_bytes, largest = 0, 0, ("", 0)
    for key, value in model.state_dict().items():
        for t in value if isinstance(value, tuple) else (value,):  # a quantized Linear packs (weight, bias)
            if not isinstance(t, torch.Tensor):
                continue
            n = t.numel() * t.element_size()
            if t.dtype == torch.qint8:
                int8_bytes += n
            else:
                float_bytes += n
                largest = max(largest, (key, n), key=lambda kv: kv[1])
    return int8_bytes, float_bytes, *largest


breakdown = []
for name, (model, *_) in models.items():
    int8_b, float_b, big_name, big_b = stored_bytes(quantized[name])
    file_b = model_size_bytes(quantized[name])
    breakdown.append({"model": name, "params in Linear weights": f"{linear_weight_share(model):.0%}",
                      "int8 file MB": file_b / 1e6, "int8 weights MB": int8_b / 1e6, "float32 tensors MB": float_b / 1e6,
                      "largest float32 tensor": big_name, "its share of the file": f"{big_b / file_b:.0%}"})
format_table(breakdown, floatfmt=".3g").show()
wte = gpt.transformer.wte.weight
head_int8 = quantized["BBC GPT"].lm_head.weight()  # the output layer's int8 copy
print(f"GPT: the token table is {wte.numel() / num_parameters(gpt):.0%} of the parameters; the output layer "
      f"shares it (tied weights: {gpt.lm_head.weight is wte}); after quantization the file holds it twice, "
      f"{wte.numel() * 4 / 1e6:.2f} MB as float32 and {head_int8.numel() / 1e6:.2f} MB as the int8 output layer")

# %%
by_model = {r["model"]: r for r in quant_rows}
acc_change = {n: round((by_model[n]["int8"] - by_model[n]["fp32"]) * len(test_topics if "MiniLM" in n else y_test))
              for n in ("MLP 64-512-512-10", "digit CNN", "MiniLM topic classifier")}
display(Markdown("\n".join([
    "What the tables say (this run's figures):",
    "",
    "- **Accuracy**: int8 changes the number of correct test answers by "
    + ", ".join(f"{v:+d} for the {n}" for n, v in acc_change.items())
    + f" (of {len(y_test)} images and {len(test_topics)} articles); the GPT's validation loss goes from "
    f"{by_model['BBC GPT']['fp32']:.4f} to {by_model['BBC GPT']['int8']:.4f}. MiniLM's linear head was trained "
    "on the float32 encoder's vectors, and the int8 encoder's are slightly different. Quantization is not free; "
    "it has to be measured on the task.",
    "- **Size** falls by "
    + ", ".join(f"{r['smaller']} for the {r['model']}" for r in quant_rows)
    + ". It approaches 4x only where nearly all parameters are Linear weights (first column of the second table). "
    "The rest stays float32: the CNN's convolutions, MiniLM's word-embedding table, the GPT's token and position "
    "tables, which the GPT moreover stores twice once its tied output layer is quantized (the line under the table).",
    "- **Speed** changes by "
    + ", ".join(f"{r['faster']} for the {r['model']}" for r in quant_rows)
    + ". Int8 pays where large matrix products dominate; for a small model, quantizing the input on every call "
    "can cost as much as the int8 product saves. (Medians of repeated calls on a shared machine: ratios near 1 "
    "are within noise.)",
])))

# %% [markdown]
# `compress.QuantLinear`, a layer built on the quantizer of the exercise, stores int8 but computes
# in float ("weight-only" quantization). It saves the same memory, and no time in eager PyTorch:

# %%
weight_only = quantize_linears(teacher)
print(f"MLP, weight-only int8: {model_size_bytes(weight_only) / 1e6:.3f} MB (fp32 {model_size_bytes(teacher) / 1e6:.3f} MB), "
      f"test accuracy {digit_accuracy(weight_only):.3f}, "
      f"{measure_latency(weight_only, x_test[:64], repeats=pick(fast=2, full=20)) * 1e3:.2f} ms per batch of 64")


# %% [markdown]
# ## 5.4.3 Knowledge distillation
#
# A small network trained on the labels alone learns "this image is a 3". A large trained network
# knows more: that this particular 3 looks a bit like an 8 and not at all like a 1. **Knowledge
# distillation** (Hinton et al., 2015) trains the small *student* on the teacher's output
# probabilities as well as the labels. Both distributions are softened with a temperature $T$ so
# the small probabilities carry signal:
#
# $$\mathcal{L} = \alpha\, T^2\, \mathrm{KL}\!\left(p^{\text{teacher}}_T \,\middle\|\, p^{\text{student}}_T\right) + (1 - \alpha)\, \mathrm{CE}(\text{student}, y), \qquad p_T = \operatorname{softmax}(z / T).$$
#
# (`compress.distillation_loss`; the $T^2$ keeps the soft term's gradients on the scale of the hard
# one.)
#
# ### Exercise 5.5 — the distillation loss
# Write `distillation_loss(student_logits, teacher_logits, labels, T, alpha)` for logits of shape
# (B, C) and class ids `labels` of shape (B,). The KL term is summed over the C classes and averaged
# over the B examples; the cross-entropy uses the student's logits as they are, without $T$. You may
# use `torch.nn.functional` (`log_softmax`, `softmax`, `cross_entropy`, `kl_div`). The check compares
# with `course_lib.compress.distillation_loss` on six cases, to 1e-5.

# %% tags=["exercise"]
def distillation_loss(student_logits, teacher_logits, labels, T, alpha):
    """alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE(student, labels), p = softmax(logits / T)."""
    ### BEGIN SOLUTION
    log_p_student = torch.log_softmax(student_logits / T, dim=-1)  # (B, C)
    log_p_teacher = torch.log_softmax(teacher_logits / T, dim=-1)  # (B, C)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1).mean()  # sum over C, mean over B
    hard = torch.nn.functional.cross_entropy(student_logits, labels)
    return alpha * T**2 * kl + (1 - alpha) * hard
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05_deploy import check_distillation_loss

check_distillation_loss(distillation_loss)

# %% [markdown]
# The teacher is the MLP above. The students are MLPs with one hidden layer of $w$ neurons,
# each trained twice from the same initial weights and with the same batches: with the labels only,
# and with distillation ($T = 2$, $\alpha = 0.5$). The accuracies are averaged over several seeds.

# %%
widths, seeds = pick(fast=(8, 32), full=(8, 16, 32, 64)), pick(fast=(0,), full=(0, 1, 2))
T, alpha = 2.0, 0.5
results = {}
for width in widths:
    for seed in seeds:
        torch.manual_seed(seed)
        plain = MLP([64, width, 10])
        student = MLP([64, width, 10])
        student.load_state_dict(plain.state_dict())  # the same start for both
        distill(None, plain, loader(x_train, y_train, seed), epochs=epochs, lr=2e-3, alpha=0.0)
        distill(teacher, student, loader(x_train, y_train, seed), epochs=epochs, lr=2e-3, temperature=T, alpha=alpha)
        results.setdefault(width, []).append((digit_accuracy(plain), digit_accuracy(student)))
rows = [{"student": f"64-{w}-10", "params": num_parameters(MLP([64, w, 10])),
         "size KB": model_size_bytes(MLP([64, w, 10])) / 1024,
         "labels only": float(np.mean([p for p, _ in r])), "distilled": float(np.mean([d for _, d in r])),
         "gain (points)": 100 * float(np.mean([d - p for p, d in r]))} for w, r in results.items()]
rows.append({"student": "teacher 64-512-512-10", "params": num_parameters(teacher),
             "size KB": model_size_bytes(teacher) / 1024, "labels only": digit_accuracy(teacher),
             "distilled": "(the teacher)", "gain (points)": "-"})
format_table(rows, floatfmt=".4g").show()
distill_rows = rows

# %%
fig, ax = plt.subplots(figsize=(7, 4))
students = distill_rows[:-1]
ax.plot([r["size KB"] for r in students], [r["labels only"] for r in students], "o-", label="student, labels only")
ax.plot([r["size KB"] for r in students], [r["distilled"] for r in students], "s--", label="student, distilled")
ax.plot(distill_rows[-1]["size KB"], distill_rows[-1]["labels only"], "*", ms=14, color="#b5443b", label="teacher")
ax.set_xscale("log")
ax.set_xlabel("model size (KB, log scale)")
ax.set_ylabel("test accuracy (mean over seeds)")
ax.set_title("Size against accuracy on the digits")
ax.legend()
plt.show()

# %%
point = 100 / len(y_test)  # one test image, in percentage points
largest, teacher_row = distill_rows[-2], distill_rows[-1]
behind = round((teacher_row["labels only"] - largest["labels only"]) * len(y_test))
gains = [round(r["gain (points)"] / point) for r in distill_rows[:-1]]  # in test images
spread = max(np.std([p for p, _ in r]) for r in results.values()) * len(y_test)  # seed-to-seed, in images
display(Markdown(
    f"Two observations from this run. First, size buys accuracy only up to a point: the {largest['student']} "
    f"student, {teacher_row['size KB'] / largest['size KB']:.0f} times smaller than the teacher, is {behind} test "
    f"images ({behind * point:.2f} percentage points) behind it (mean over {len(seeds)} seed(s)). Second, the "
    f"\"gain\" column, distilled minus labels only, ranges from {min(gains):+d} to {max(gains):+d} test images "
    f"(one image is {point:.2f} points; the labels-only students of one width differ between seeds by up to "
    f"{spread:.1f} images, one standard deviation): "
    + ("distillation does not help here. With every label available and a task this easy, the soft targets add "
       "nothing the labels do not already say." if max(gains) <= 0 else
       "where distillation helps at all, it is by a few images, to be read against that spread.")
))

# %% [markdown]
# This matches a common finding: distillation pays when the student cannot get the same information
# elsewhere.
#
# That is the situation where it is used in practice: plenty of *unlabelled* inputs, few labels, and
# a good teacher. We give a student the labels of only 10% of the training images, and another
# student no labels at all, only the teacher's probabilities on every training image
# ($\alpha = 1$). Both take the same number of optimisation steps:

# %%
n_labelled = len(y_train) // 10
few_epochs = epochs * (len(y_train) // n_labelled)  # as many steps as the distilled student
plain_acc, distilled_acc = [], []
for seed in seeds:
    keep = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))[:n_labelled]
    torch.manual_seed(seed)
    plain, student = MLP([64, 32, 10]), MLP([64, 32, 10])
    student.load_state_dict(plain.state_dict())
    distill(None, plain, loader(x_train[keep], y_train[keep], seed), epochs=few_epochs, lr=2e-3, alpha=0.0)
    distill(teacher, student, loader(x_train, y_train, seed), epochs=epochs, lr=2e-3, temperature=T, alpha=1.0)
    plain_acc.append(digit_accuracy(plain))
    distilled_acc.append(digit_accuracy(student))
format_table([
    {"student 64-32-10": "labels only", "images it trains on": n_labelled, "labels it reads": n_labelled,
     "labels behind its targets": n_labelled, "test accuracy (mean)": float(np.mean(plain_acc)),
     "seeds": f"{min(plain_acc):.3f} to {max(plain_acc):.3f}"},
    {"student 64-32-10": "distilled, no labels of its own", "images it trains on": len(y_train),
     "labels it reads": 0, "labels behind its targets": f"{len(y_train)} (through the teacher)",
     "test accuracy (mean)": float(np.mean(distilled_acc)),
     "seeds": f"{min(distilled_acc):.3f} to {max(distilled_acc):.3f}"},
]).show()

# %% [markdown]
# The distilled student reads no label itself, but its targets are not label-free: the teacher that
# produces them was trained on all the labels of the training images. What the comparison shows is
# that a teacher's knowledge can travel to a small model through *inputs alone*, so the student can
# learn from images whose labels it never sees; it does not show that labels are unnecessary. In a
# real project the teacher is a large model trained elsewhere, or on more data, and the inputs
# are plentiful and unlabelled. This is how compact models such as DistilBERT were made: a smaller
# network trained on a large model's outputs over a large unlabelled corpus.
#
# ## 5.4.4 Pruning
#
# Many trained weights are close to zero and matter little. **Magnitude pruning** sets the
# fraction $s$ (the *sparsity*) of weights with the smallest $|w|$ to exactly zero and keeps a
# **mask** so they stay zero if training continues.
#
# ### Exercise 5.6 — a pruning mask
# Write `magnitude_mask(w, sparsity)`: a bool tensor of the shape of `w`, `False` at the
# `round(sparsity * w.numel())` entries of smallest absolute value, `True` elsewhere. The check
# compares with `course_lib.compress.magnitude_prune` applied to one layer.

# %% tags=["exercise"]
def magnitude_mask(w, sparsity):
    """True for the weights that stay, False for the round(sparsity * n) smallest |w|."""
    ### BEGIN SOLUTION
    n_drop = round(w.numel() * sparsity)
    keep = torch.ones(w.numel(), dtype=torch.bool)
    if n_drop > 0:
        keep[w.abs().flatten().topk(n_drop, largest=False).indices] = False
    return keep.view_as(w)
    ### END SOLUTION


# %% tags=["check", "points=1"]
from course_lib.exercises.ch05 import check_magnitude_mask

check_magnitude_mask(magnitude_mask)

# %% [markdown]
# `compress.magnitude_prune` applies such masks to every layer of a model, with one threshold for
# the whole model (**global**: layers with many small weights lose more) or the same fraction in
# each **layer**. We prune copies of the teacher at growing sparsity and measure the test accuracy
# right after pruning and after a short fine-tuning (5 epochs, the masks re-applied after every
# step so pruned weights stay zero):

# %%
def teacher_copy() -> MLP:
    m = MLP(teacher.sizes)
    m.load_state_dict(teacher.state_dict())
    return m


levels = pick(fast=(0.0, 0.5, 0.9), full=(0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98))
curves = {}
for scope in ("global", "layer"):
    for s in levels:
        pruned = teacher_copy()
        masks = magnitude_prune(pruned, s, scope=scope)
        before = digit_accuracy(pruned)
        distill(None, pruned, loader(x_train, y_train, 0), epochs=pick(fast=1, full=5), lr=5e-4, alpha=0.0,
                masks=masks)
        curves.setdefault(scope, []).append((sparsity(pruned), before, digit_accuracy(pruned)))
fig, ax = plt.subplots(figsize=(7, 4))
for scope, points in curves.items():
    sp, before, after = zip(*points)
    ax.plot(sp, before, "o-", label=f"{scope}: right after pruning")
    ax.plot(sp, after, "s--", label=f"{scope}: after fine-tuning")
ax.set_xlabel("sparsity (share of Linear weights that are zero)")
ax.set_ylabel("test accuracy")
ax.set_title("Magnitude pruning of the MLP 64-512-512-10")
ax.legend(fontsize=8)
plt.show()
format_table([{"sparsity": sp, "scope": scope, "pruned": b, "fine-tuned": a}
                               for scope, pts in curves.items() for sp, b, a in pts], floatfmt=".3f").show()

# %%
unpruned = curves["global"][0][1]
summary = []
for scope, pts in curves.items():
    ok = [sp for sp, _, a in pts if a >= unpruned - 0.01]  # within one point of the unpruned teacher
    summary.append(f"with {scope} pruning, fine-tuned accuracy stays within one point of the unpruned "
                   f"{unpruned:.3f} up to sparsity {max(ok):.2f}" if ok else
                   f"with {scope} pruning, fine-tuned accuracy is more than one point below the unpruned "
                   f"{unpruned:.3f} at every sparsity")
display(Markdown("In this run, " + "; ".join(summary) + "."))

# %% [markdown]
# What is left of the network at the highest sparsity, and which digits it can still name before
# and after fine-tuning:

# %%
s_max = max(levels)
broken = teacher_copy()
broken_masks = magnitude_prune(broken, s_max, scope="global")
live = [int((layer.weight != 0).sum()) for layer in broken.layers]
dead_outputs = int((broken.layers[-1].weight == 0).all(dim=1).sum())  # output neurons with no weight left
with torch.no_grad():
    before_classes = broken.eval()(x_test).argmax(-1).unique().numel()
before_acc = digit_accuracy(broken)
distill(None, broken, loader(x_train, y_train, 0), epochs=pick(fast=1, full=5), lr=5e-4, alpha=0.0, masks=broken_masks)
with torch.no_grad():
    after_classes = broken.eval()(x_test).argmax(-1).unique().numel()
after_acc = digit_accuracy(broken)
broken_text = (
    f"At sparsity {s_max:.2f} (global) the three layers keep {', '.join(f'{n:,}' for n in live)} weights; "
    f"{dead_outputs} of the 10 output neurons have no incoming weight left and can only answer with their bias. "
    f"The pruned network names {before_classes} different digits on the test images (accuracy {before_acc:.3f}), "
    f"after fine-tuning {after_classes} ({after_acc:.3f}); guessing would score about 0.1. "
)
if max(before_acc, after_acc) < 0.5:
    broken_text += (
        "Both are the accuracies of a broken network. With so few weights left, five epochs of fine-tuning "
        "cannot rebuild what was cut; they change which digits it names (the counts above), and that can lose "
        "as many test images as it wins. The difference between the two figures is not a trend to read; the "
        "lesson is where the curve falls off."
    )
else:
    broken_text += "At this sparsity the network still works: the break comes at higher sparsity (learner mode)."
display(Markdown(broken_text))

# %% [markdown]
# Global pruning does not take the same share from every layer:

# %%
pruned = teacher_copy()
magnitude_prune(pruned, 0.9, scope="global")
layer_share = [float((layer.weight == 0).float().mean()) for layer in pruned.layers]
for i, (layer, share) in enumerate(zip(pruned.layers, layer_share)):
    print(f"layer {i + 1} {tuple(layer.weight.shape)}: {share:.0%} of its weights pruned")
most, least = int(np.argmax(layer_share)), int(np.argmin(layer_share))
display(Markdown(
    f"Layer {most + 1} {tuple(pruned.layers[most].weight.shape)} gives up the most ({layer_share[most]:.0%}) and "
    f"layer {least + 1} {tuple(pruned.layers[least].weight.shape)} the least ({layer_share[least]:.0%}). A "
    "per-layer rule takes 90% from each, including the layer that can least spare it."
))

# %% [markdown]
# **But the file does not shrink.** A pruned weight is a stored zero, and a dense matrix product
# multiplies zeros as fast as anything else:

# %% tags=["nbval-check-output"]
print(f"sparsity {sparsity(pruned):.2f}; dense file the same size as the unpruned one:",
      model_size_bytes(pruned) == model_size_bytes(teacher))

# %%
def csr_bytes(w: torch.Tensor) -> int:
    """Bytes of w in compressed sparse row form: the non-zero values (float32), their column
    indices and one row pointer per row (int64, as PyTorch stores them)."""
    nnz = int((w != 0).sum())
    return nnz * 4 + nnz * 8 + (w.shape[0] + 1) * 8


dense_bytes = sum(layer.weight.numel() * 4 for layer in pruned.layers)
sparse_bytes = sum(csr_bytes(layer.weight.detach()) for layer in pruned.layers)
print(f"Linear weights at 90% sparsity: dense {dense_bytes / 1024:.0f} KB, "
      f"compressed sparse rows {sparse_bytes / 1024:.0f} KB")

# %% [markdown]
# A sparse format saves space only when the index overhead is smaller than the zeros it drops, and
# it is faster only with kernels or hardware built for sparsity. **Structured pruning** avoids the
# problem by removing whole neurons: `compress.prune_mlp_neurons` drops the hidden neurons whose
# incoming weights have the smallest norm and builds a genuinely smaller MLP.

# %%
rows = []
for amount in pick(fast=(0.0, 0.75), full=(0.0, 0.5, 0.75, 0.9, 0.95)):
    small, _ = prune_mlp_neurons(teacher_copy(), amount)
    before = digit_accuracy(small)
    latency = measure_latency(small, x_test[:64], repeats=pick(fast=2, full=30)) * 1e3
    distill(None, small, loader(x_train, y_train, 0), epochs=pick(fast=1, full=5), lr=5e-4, alpha=0.0)
    rows.append({"neurons removed": amount, "hidden sizes": str(small.sizes[1:-1]),
                 "params": num_parameters(small), "size KB": model_size_bytes(small) / 1024,
                 "ms per batch of 64": latency, "pruned": before, "fine-tuned": digit_accuracy(small)})
format_table(rows, floatfmt=".4g").show()
full_row, three_quarters = rows[0], next(r for r in rows if r["neurons removed"] == 0.75)
display(Markdown(
    f"Removing three quarters of the neurons leaves a model of {three_quarters['size KB'] / full_row['size KB']:.0%} "
    f"of the size, {full_row['ms per batch of 64'] / three_quarters['ms per batch of 64']:.1f}x as fast, at test "
    f"accuracy {three_quarters['fine-tuned']:.3f} after a short fine-tune (the whole teacher: {full_row['fine-tuned']:.3f}). "
    "Taken together with 5.4.3, the lesson of this task is that the teacher was bigger than the digits need."
))
structured_rows = rows

# %% [markdown]
# ## Summary

# %%
mlp_q, transformer_q = by_model["MLP 64-512-512-10"], [by_model["MiniLM topic classifier"], by_model["BBC GPT"]]
Table(["technique", "what it changes", "measured here"], [
    ["dynamic int8 quantization", "weights stored and multiplied in 8 bits",
     f"{mlp_q['smaller']} smaller for the MLP, {' and '.join(r['smaller'] for r in transformer_q)} for the "
     f"transformers (embedding tables stay float32); speed {', '.join(r['faster'] for r in quant_rows)} for the "
     "four models"],
    ["distillation", "a small model trained on a big one's outputs",
     f"{min(gains):+d} to {max(gains):+d} test images with all labels on digits; {float(np.mean(distilled_acc)):.3f} "
     f"against {float(np.mean(plain_acc)):.3f} when the student reads no labels of its own (its teacher did)"],
    ["magnitude pruning", "the smallest weights set to zero", f"{summary[0]}; no smaller file or faster dense maths"],
    ["structured pruning", "whole neurons removed",
     f"three quarters of the neurons gone: {three_quarters['size KB'] / full_row['size KB']:.0%} of the size, "
     f"accuracy {three_quarters['fine-tuned']:.3f}"],
]).show()

# %% [markdown]
# The techniques combine: a distilled student can be pruned and then quantized. For large language
# models, int8 and 4-bit weight quantization is what lets a model with billions of parameters run
# on a single GPU or a laptop.
