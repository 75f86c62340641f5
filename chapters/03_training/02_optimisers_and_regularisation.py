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
# # 3.2 · Optimisers, schedules, initialisation and regularisation
#
# Notebook 3.1 trained with the plainest rule there is, $w \leftarrow w - \eta \nabla L$. Large
# models are trained with better rules, with a learning rate that changes during training, from a
# carefully chosen starting point, and with tricks that stop them from memorising their training
# data. This notebook takes these four in turn:
#
# 1. **update rules**: SGD, momentum, RMSprop, Adam and AdamW, written out and checked against
#    `torch.optim`, then raced on the same problems;
# 2. **learning-rate schedules**: linear warmup followed by cosine decay, the schedule the course's
#    `Trainer` uses;
# 3. **initialisation**: why weights must not start at zero, and how their scale sets the size of
#    the signal and the gradient through many layers;
# 4. **regularisation**: weight decay, dropout and early stopping on a model that overfits.

# %% tags=["imports"]
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from course_lib import cache_dir, pick, seed_everything
from course_lib import training_basics as basics
from course_lib.datasets import Splits, digits, stratified_split
from course_lib.mlp_cnn import MLP
from course_lib.plots import use_course_style
from course_lib.trainer import TrainConfig, Trainer, lr_at
from course_lib.training_plots import plot_curves, plot_optimizer_paths, plot_train_val, smooth

use_course_style()
seed_everything(0)
torch.set_num_threads(1)  # the models here are tiny: splitting their matrix products over cores costs more than it saves

# %% [markdown]
# ## 3.2.1 Update rules
#
# All of them start from the gradient $g_t = \nabla L(w_t)$ of a **mini-batch**: a few dozen
# random examples instead of the whole training set, which makes each step cheap and a little
# noisy (stochastic gradient descent, SGD). They differ in what they do with $g_t$:
#
# | rule | update (learning rate $\eta$) | idea |
# |---|---|---|
# | SGD | $w \leftarrow w - \eta g$ | step against the gradient |
# | momentum | $u \leftarrow \mu u + g;\ \ w \leftarrow w - \eta u$ | a heavy ball: keep moving the way you were going, damp the zig-zag |
# | RMSprop | $s \leftarrow \alpha s + (1-\alpha) g^2;\ \ w \leftarrow w - \eta\, g / (\sqrt{s} + \epsilon)$ | divide each coordinate by its typical gradient size |
# | Adam | $m \leftarrow \beta_1 m + (1-\beta_1) g;\ \ v \leftarrow \beta_2 v + (1-\beta_2) g^2$; $\ w \leftarrow w - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)$ | momentum and RMSprop together |
# | AdamW | Adam, plus $w \leftarrow w (1 - \eta \lambda)$ before the step | weight decay kept apart from the gradient statistics |
#
# Adam's running means $m$ and $v$ start at zero, so early on they are too small; dividing by
# $1 - \beta^t$ corrects that: $\hat m = m / (1 - \beta_1^t)$, $\hat v = v / (1 - \beta_2^t)$.
# AdamW is the optimiser almost every large language model is trained with.
#
# `course_lib.training_basics` writes each rule as a small function. Before using them to explain
# anything, we check them against PyTorch's optimisers over 20 steps on a random problem:

# %% tags=["nbval-check-output"]
def run_torch(make_optimizer, grads, w0):
    w = w0.clone().requires_grad_(True)
    opt = make_optimizer([w])
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach()


gen = torch.Generator().manual_seed(0)
w0 = torch.randn(10, generator=gen, dtype=torch.float64)
grads = [torch.randn(10, generator=gen, dtype=torch.float64) for _ in range(20)]

w, buf = w0.clone(), None
for g in grads:
    w, buf = basics.sgd_step(w, g, buf, lr=0.1, momentum=0.9)
gap_sgd = (w - run_torch(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), grads, w0)).abs().max()

w, s = w0.clone(), torch.zeros_like(w0)
for g in grads:
    w, s = basics.rmsprop_step(w, g, s, lr=0.01)
gap_rms = (w - run_torch(lambda p: torch.optim.RMSprop(p, lr=0.01), grads, w0)).abs().max()

w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
for t, g in enumerate(grads, start=1):
    w, m, v = basics.adamw_step(w, g, m, v, t, lr=0.01, weight_decay=0.1)
gap_adamw = (w - run_torch(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), grads, w0)).abs().max()

for name, gap in [("SGD + momentum", gap_sgd), ("RMSprop", gap_rms), ("AdamW", gap_adamw)]:
    print(f"{name:<15} equal to torch.optim after 20 steps within 1e-12: {bool(gap < 1e-12)}")
assert max(gap_sgd, gap_rms, gap_adamw) < 1e-12

# %% [markdown]
# ### Exercise 3.2a — one AdamW step
# Write `adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay)` returning the new
# `(param, m, v)`, with `step` counting from 1. Follow the table: decay the weights first, update
# the two running means, correct their bias, then step. The check compares it with
# `torch.optim.AdamW`, including a first step, a late step and plain Adam (`weight_decay=0`).

# %% tags=["exercise"]
def adamw_step(param, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """One AdamW update; returns (param, m, v)."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch03 import check_adamw_step

check_adamw_step(adamw_step)

# %% [markdown]
# ## 3.2.2 The rules on a valley
#
# A loss surface that is steep in one direction and flat in another is the normal case in deep
# learning, and the case that separates these rules. Take
# $L(w_1, w_2) = \tfrac12 (0.2\, w_1^2 + 4\, w_2^2)$: twenty times steeper across ($w_2$) than
# along ($w_1$). Each optimiser starts at the same point and takes 50 steps:

# %%
def valley(w1, w2):
    return 0.5 * (0.2 * w1**2 + 4.0 * w2**2)


def path_of(make_optimizer, steps=50):
    w = torch.tensor([-4.5, 1.5], requires_grad=True)
    opt = make_optimizer([w])
    path = [w.detach().clone()]
    for _ in range(steps):
        loss = valley(w[0], w[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        path.append(w.detach().clone())
    return torch.stack(path).numpy()


paths = {
    "SGD (lr 0.45)": path_of(lambda p: torch.optim.SGD(p, lr=0.45)),
    "momentum 0.9 (lr 0.05)": path_of(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "RMSprop (lr 0.1)": path_of(lambda p: torch.optim.RMSprop(p, lr=0.1)),
    "Adam (lr 0.3)": path_of(lambda p: torch.optim.Adam(p, lr=0.3)),
}
fig = plot_optimizer_paths(valley, paths, xlim=(-5, 1.5), ylim=(-2, 2), minimum=(0, 0),
                           title="50 steps on a narrow valley")
plt.show()

# %% [markdown]
# - **SGD** needs a rate small enough for the steep direction, so it zig-zags across the valley
#   and crawls along it.
# - **Momentum** builds up speed along the valley floor, where the gradients agree from step to
#   step, while the zig-zag cancels out; it overshoots and swings back, like a ball.
# - **RMSprop** and **Adam** rescale each coordinate by its own gradient size, so both directions
#   move at a similar pace and they head almost straight down. Adam's momentum also makes it
#   circle the minimum before it settles.
#
# ## 3.2.3 The rules on a real problem
#
# Now a 64-128-10 MLP on the 8x8 digits, the same starting weights for every optimiser, mini-batches
# of 32 and the learning rate each rule is commonly used with. `basics.fit_classifier` is the plain
# training loop: shuffle, then for each batch `loss.backward()` and `optimizer.step()`.

# %%
images, labels = digits()
X = torch.from_numpy(images.reshape(len(images), -1))  # (1797, 64) pixels in [0, 1]
y = torch.from_numpy(labels)
splits = Splits.make(labels, seed=0)  # the fixed 80/10/10 split used throughout the chapter
x_train, x_val, x_test = splits.take(X)
y_train, y_val, y_test = splits.take(y)

optimisers = {
    "SGD (lr 0.1)": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum (lr 0.05)": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "RMSprop (lr 1e-3)": lambda p: torch.optim.RMSprop(p, lr=1e-3),
    "Adam (lr 1e-3)": lambda p: torch.optim.Adam(p, lr=1e-3),
    "AdamW (lr 1e-3, wd 0.01)": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}
epochs = pick(fast=4, full=20)
runs = {}
for name, make in optimisers.items():
    torch.manual_seed(0)  # identical initial weights for every optimiser
    model = MLP([64, 128, 10])
    runs[name] = basics.fit_classifier(model, (x_train, y_train), (x_val, y_val), make(model.parameters()),
                                       epochs=epochs, batch_size=32, seed=0)

steps_per_epoch = len(runs["SGD (lr 0.1)"].step_loss) // epochs
fig = plot_curves({name: smooth(h.step_loss, steps_per_epoch) for name, h in runs.items()},
                  xlabel="step (mini-batch of 32)", ylabel="training loss (moving average over an epoch)",
                  logy=True, title=f"One MLP, five optimisers, {epochs} epochs")
plt.show()
print(f"{'optimiser':<26} {'final train loss':>16} {'val accuracy':>13}")
for name, h in runs.items():
    print(f"{name:<26} {h.train_loss[-1]:>16.4f} {h.val_accuracy[-1]:>13.3f}")

# %% [markdown]
# On this small, easy problem every rule reaches a good model. The race itself depends as much on
# the learning rate each rule gets as on the rule: here momentum pulls ahead, and Adam and AdamW
# at their customary rate of $10^{-3}$ are no faster than plain SGD at 0.1. Adam-type rules earn
# their place on transformers, whose parameters (embeddings, norms, attention and MLP matrices) see
# gradients of very different sizes; a per-coordinate step size copes with that without tuning a
# rate for each kind of parameter.
#
# The rate itself still matters more than the rule. With plain SGD, rates from small to far too
# large:

# %%
lr_runs = {}
for lr in (0.01, 0.1, 1.0, 5.0):
    torch.manual_seed(0)
    model = MLP([64, 128, 10])
    h = basics.fit_classifier(model, (x_train, y_train), (x_val, y_val), torch.optim.SGD(model.parameters(), lr=lr),
                              epochs=epochs, batch_size=32, seed=0)
    lr_runs[f"SGD lr {lr:g}"] = smooth(h.step_loss, steps_per_epoch)
fig = plot_curves(lr_runs, xlabel="step", ylabel="training loss (moving average)", logy=True,
                  title="Plain SGD: the learning rate decides")
plt.show()
for name, curve in lr_runs.items():
    print(f"{name:<12} last moving-average loss: {curve[-1]:.3g}")

# %% [markdown]
# Too small crawls; too large makes each step overshoot the valley it is in, and the loss jumps
# around far above where a good rate brings it (or becomes `nan` when the numbers overflow).
#
# ## 3.2.4 Learning-rate schedules: warmup, then cosine decay
#
# Nearly every large model is trained with a rate that changes over time:
#
# - **warmup**: for the first $W$ steps the rate grows linearly from almost zero. At the start the
#   weights are random, the gradients large and Adam's running averages are based on a handful of
#   batches; small steps keep one unlucky early batch from throwing the model somewhere it cannot
#   recover from;
# - **cosine decay**: afterwards the rate falls along half a cosine wave from its peak $\eta$ to a
#   floor $\eta_{\min}$ at the last step $S$. Large steps explore early; small steps settle into a
#   minimum at the end.
#
# The course's `Trainer` uses exactly this (`course_lib.trainer.lr_at`). For step $t$ counted from 0:
#
# $$\eta_t = \begin{cases}
# \eta \,\dfrac{t + 1}{W + 1} & t < W \\[2mm]
# \eta_{\min} + (\eta - \eta_{\min})\, \dfrac{1 + \cos(\pi\, p)}{2}, \quad p = \dfrac{t - W}{S - W} & W \le t \le S \\[2mm]
# \eta_{\min} & t > S
# \end{cases}$$
#
# ### Exercise 3.2b — the warmup-cosine schedule
# Write `warmup_cosine_lr(step, max_steps, warmup_steps, lr, min_lr)` from the formula. If
# `max_steps == warmup_steps`, treat the cosine part as having length 1 (divide by
# `max(1, max_steps - warmup_steps)`). The check compares it with `lr_at` at 14 steps, across the
# warmup, the decay and past the end.

# %% tags=["exercise"]
def warmup_cosine_lr(step, max_steps, warmup_steps, lr, min_lr):
    """Linear warmup to lr over warmup_steps, then cosine decay to min_lr at max_steps."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch03 import check_warmup_cosine_lr

check_warmup_cosine_lr(warmup_cosine_lr)

# %%
schedules = {
    "warmup 100, cosine to 1e-4": TrainConfig(max_steps=1000, warmup_steps=100, lr=1e-3, min_lr=1e-4),
    "no warmup, cosine to 0": TrainConfig(max_steps=1000, warmup_steps=0, lr=1e-3, min_lr=0.0),
    "warmup 300, cosine to 5e-4": TrainConfig(max_steps=1000, warmup_steps=300, lr=1e-3, min_lr=5e-4),
}
steps = np.arange(0, 1101)
fig = plot_curves({name: (steps, [lr_at(int(t), cfg) for t in steps]) for name, cfg in schedules.items()},
                  xlabel="optimizer step", ylabel="learning rate",
                  title="course_lib.trainer.lr_at: three schedules of 1000 steps")
plt.show()

# %% [markdown]
# ## 3.2.5 Initialisation: why not start at zero?
#
# Training has to start somewhere. Starting every weight at zero looks neutral but is a trap: all
# hidden units then compute the same thing, receive the same gradient and stay identical forever,
# so a layer of 32 units behaves like one. Worse, with $\tanh$ (or ReLU) a zero input gives a zero
# output, so the output layer sees only zeros and no gradient reaches the first layer at all.
#
# Random starting weights break this symmetry. In deep networks their **scale** matters too. A
# linear layer with `fan_in` inputs of second moment $q$ and weights of variance $\sigma^2$ gives
# outputs of second moment $\text{fan-in} \cdot \sigma^2 \cdot q$, so the signal keeps its size only if
# $\text{fan-in} \cdot \sigma^2 = 1$ (or $2$ behind a ReLU, which zeroes half of it). Three common
# choices, each a uniform distribution of a different width:
#
# | scheme | variance of a weight | factor per layer, tanh near 0 | factor per layer, ReLU |
# |---|---|---|---|
# | PyTorch's default for `nn.Linear`: $U(\pm 1/\sqrt{\text{fan-in}})$ | $1/(3\,\text{fan-in})$ | $1/3$ | $1/6$ |
# | Xavier (Glorot) | $2/(\text{fan-in} + \text{fan-out})$ | $1$ (square layers) | $1/2$ |
# | Kaiming (He) | $2/\text{fan-in}$ | $2$ | $1$ |
#
# So PyTorch's default does **not** keep the signal's size constant: each layer divides its
# variance by about 3. `course_lib.initialisation` measures this on one forward and backward pass
# through a network of 10 hidden layers of 256 units, fed a batch of digit images (standardised to
# mean 0 and variance 1), recording the spread of every hidden layer's outputs and of the gradient
# of its weights:

# %%
from course_lib.initialisation import SCHEMES, deep_mlp, signal_statistics, weight_variance

depth, width = 10, 256
x_probe = (x_train - x_train.mean()) / x_train.std()  # (N, 64), second moment 1
stats = {(act, scheme): signal_statistics(deep_mlp(64, width, depth, 10, act, scheme, seed=0), x_probe, y_train)
         for act in ("tanh", "relu") for scheme in SCHEMES}
layers = np.arange(1, depth + 1)
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
for col, act in enumerate(("tanh", "relu")):
    for scheme in SCHEMES:
        st = stats[act, scheme]
        axes[col].plot(layers, st.activation_std, marker="o", label=scheme)
        axes[col + 2].plot(layers, st.gradient_std, marker="o", label=scheme)
    axes[col].set(title=f"{act}: std of the outputs", xlabel="hidden layer", yscale="log")
    axes[col + 2].set(title=f"{act}: std of the weight gradient", xlabel="hidden layer", yscale="log")
axes[0].legend()
fig.tight_layout()
plt.show()

# %% tags=["nbval-check-output"]
print(f"{'activation':<10} {'scheme':<16} {'fan_in * var(w)':>16} {'output std, layer 1':>20} {'layer 10':>9} "
      f"{'gradient std, layer 1':>22} {'layer 10':>9}")
for (act, scheme), st in stats.items():
    gain = width * weight_variance(scheme, width, width)
    print(f"{act:<10} {scheme:<16} {gain:>16.3f} {st.activation_std[0]:>20.3g} {st.activation_std[-1]:>9.2g} "
          f"{st.gradient_std[0]:>22.2g} {st.gradient_std[-1]:>9.2g}")
default_shrink = stats["relu", "PyTorch default"].activation_std[0] / stats["relu", "PyTorch default"].activation_std[-1]
kaiming_ratio = stats["relu", "Kaiming"].activation_std[-1] / stats["relu", "Kaiming"].activation_std[0]
print(f"\nReLU, PyTorch default: layer 10's outputs are {default_shrink:,.0f} times smaller than layer 1's "
      f"(theory: sqrt(6)^9 = {6 ** 4.5:,.0f})")
print(f"ReLU, Kaiming: layer 10's output std is {kaiming_ratio:.2f} times layer 1's (theory: 1)")
grad_ratio = stats["relu", "Kaiming"].gradient_std[0] / stats["relu", "PyTorch default"].gradient_std[0]
print(f"ReLU: the first layer's weight gradient is {grad_ratio:,.0f} times smaller with the default than with Kaiming")
assert default_shrink > 100 and 0.5 < kaiming_ratio < 2 and grad_ratio > 100

# %% [markdown]
# The measurements follow the table. With PyTorch's default the outputs shrink by a steady factor
# per layer (about $\sqrt 3$ behind tanh, $\sqrt 6$ behind ReLU). The weight gradients are nearly
# flat across the layers in every scheme: a layer's weight gradient multiplies the signal arriving
# from below, which shrinks going up, by the error arriving from above, which shrinks going down.
# Under the default they are simply all tiny (the ratio printed above), so the learning rate would
# have to make up for it. Kaiming keeps a ReLU network's signal at one size; Xavier nearly keeps a
# tanh network's (tanh's slope falls below 1 away from zero, so the signal still decays slowly);
# Kaiming with tanh overshoots until tanh's flat tails cap it. The histograms show the first and
# the last hidden layer of the tanh network:

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
for ax, scheme in zip(axes, SCHEMES):
    st = stats["tanh", scheme]
    for layer in (1, depth):
        ax.hist(st.activations[layer - 1].flatten().numpy(), bins=60, range=(-1, 1), alpha=0.6, density=True,
                label=f"hidden layer {layer}")
    ax.set(title=f"tanh, {scheme}", xlabel="output of a hidden unit")
axes[0].set_ylabel("density")
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# With the default, layer 10's outputs are squeezed into a narrow spike around 0; with Xavier
# layer 10 is narrower than layer 1 but still spread out; with Kaiming the outputs spread all the
# way to $\pm 1$, where tanh is flat and passes back little gradient. (The GPT of notebook 3.6 uses
# GPT-2's choice, a normal distribution with standard deviation 0.02; its residual connections and
# layer normalisation keep the signal's size in check whatever the depth.)
#
# A two-layer network on digits is forgiving about the scale, as the next table shows, but not
# about zeros:

# %%
def initialise(model, scheme):
    with torch.no_grad():
        for layer in model.layers:
            if scheme == "zeros":
                layer.weight.zero_()
            elif scheme == "normal, std 0.01":
                layer.weight.normal_(0.0, 0.01)
            elif scheme == "normal, std 1":
                layer.weight.normal_(0.0, 1.0)
            layer.bias.zero_()  # "PyTorch default" keeps nn.Linear's own draw for the weights
    return model


init_epochs = 10
distinct_units, init_accuracy = {}, {}
for scheme in ("zeros", "normal, std 0.01", "normal, std 1", "PyTorch default"):
    torch.manual_seed(0)
    model = initialise(MLP([64, 32, 10], activation="tanh"), scheme)
    h = basics.fit_classifier(model, (x_train, y_train), (x_val, y_val),
                              torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                              epochs=init_epochs, batch_size=32, seed=0)
    W1 = model.layers[0].weight.detach().cpu()
    distinct_units[scheme] = len(torch.unique(W1.round(decimals=6), dim=0))  # rows of W1 that differ
    init_accuracy[scheme] = h.val_accuracy[-1]
print(f"{'initial weights':<18} {'val accuracy after ' + str(init_epochs) + ' epochs':>32}")
for scheme, acc in init_accuracy.items():
    print(f"{scheme:<18} {acc:>32.3f}")

# %% tags=["nbval-check-output"]
for scheme, n in distinct_units.items():
    print(f"{scheme:<18} the first layer ends with {n:>2} distinct hidden units of 32")
assert distinct_units["zeros"] == 1 and distinct_units["PyTorch default"] == 32
assert init_accuracy["zeros"] < 0.3 and init_accuracy["PyTorch default"] > 0.9

# %% [markdown]
# From zeros the first layer never moves: its 32 units are still one and the model can only learn
# the output biases, which amounts to guessing one class for every image. Every random start
# trains.
#
# ## 3.2.6 Overfitting, and three ways to fight it
#
# A model with many parameters and few examples can memorise its training set: the training loss
# keeps falling while the loss on data it has not seen stops improving and starts rising. To see
# this clearly we give a wide network (64-256-256-10, about 85,000 weights) only a tenth of the
# training images, some 14 per digit, and train for a long time. The validation images are the
# same fixed split as before.

# %% tags=["nbval-check-output"]
few, _ = stratified_split(y_train.numpy(), fractions=(0.1, 0.9), seed=0)
x_few, y_few = x_train[few], y_train[few]
wide = [64, 256, 256, 10]
print(f"training images: {len(x_few)}; parameters: {sum(p.numel() for p in MLP(wide).parameters()):,}")

# %% [markdown]
# Three remedies, each compared with the plain run from the same starting weights:
#
# - **weight decay** pulls every weight a little towards zero at each step (AdamW's $\lambda$),
#   preferring simple explanations that use small weights;
# - **dropout** zeroes a random half of the hidden units at every training step, so no unit can
#   rely on one particular other unit; at evaluation time all units are used (`model.eval()`);
# - **early stopping** watches the validation loss and keeps the weights from the epoch where it
#   was lowest.
#
# (Two more from the same family: *batch normalisation*, which normalises each layer's inputs over
# the batch and regularises a little as a side effect, appears in the CNN of notebook 3.3; *data
# augmentation*, making new training examples by shifting or distorting old ones, is the other
# classic.)
#
# ### Exercise 3.2c — inverted dropout
# Dropout has one subtlety: at evaluation time every unit is on, so the next layer would receive
# larger inputs than it saw in training. PyTorch's dropout (*inverted* dropout) fixes that during
# training: it divides the surviving units by $1 - p$, so each unit's expected value is the same
# in both modes, and evaluation needs no change at all. Write `dropout(x, p, training, generator)`:
# in training mode drop each entry with probability `p`, drawing the random numbers with
# `generator`, and scale the survivors; otherwise return `x` unchanged. Masks are random, so the
# check tests the rule on 20,000 entries: each output is 0 or $x / (1 - p)$, the share kept is
# within 0.02 of $1 - p$, evaluation mode and $p = 0$ are the identity, $p = 1$ gives zeros, and
# the same seed gives the same mask.

# %% tags=["exercise"]
def dropout(x, p, training, generator=None):
    """Inverted dropout: zero each entry with probability p and divide the rest by 1 - p (training only)."""
    # YOUR CODE HERE
    raise NotImplementedError()


# %% tags=["check", "raises-exception"]
from course_lib.exercises.ch03 import check_dropout

check_dropout(dropout)

# %% [markdown]
# Inside `MLP(..., dropout=0.5)` the same rule is PyTorch's `nn.Dropout`, which `model.train()` and
# `model.eval()` switch on and off. The three runs:

# %%
reg_epochs = pick(fast=30, full=200)
settings = {"plain": (0.0, 0.0), "weight decay 1.0": (1.0, 0.0), "dropout 0.5": (0.0, 0.5)}
reg_runs = {}
for name, (weight_decay, dropout) in settings.items():
    torch.manual_seed(0)
    model = MLP(wide, dropout=dropout)
    h = basics.fit_classifier(model, (x_few, y_few), (x_val, y_val),
                              torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay),
                              epochs=reg_epochs, batch_size=16, seed=0)
    reg_runs[name] = {"train_loss": h.train_loss, "val_loss": h.val_loss, "val_accuracy": h.val_accuracy}
fig = plot_train_val(reg_runs, side_by_side=True,
                     title=f"{len(x_few)} training images, {reg_epochs} epochs (dot: lowest validation loss)")
plt.show()
print(f"{'run':<18} {'final train loss':>16} {'lowest val loss':>16} {'at epoch':>9} {'final val loss':>15} {'final val acc':>14}")
for name, r in reg_runs.items():
    best = int(np.argmin(r["val_loss"]))
    print(f"{name:<18} {r['train_loss'][-1]:>16.4f} {r['val_loss'][best]:>16.3f} {best + 1:>9} "
          f"{r['val_loss'][-1]:>15.3f} {r['val_accuracy'][-1]:>14.3f}")

# %% [markdown] tags=["answer", "points=2"]
# ### Question 3.2d — which remedy to keep
# Using the table above, which of the three runs would you keep, and on what evidence? Can the final
# validation accuracies (0.928, 0.928 and 0.922) separate them? (The validation images are the chapter's
# fixed split, 180 images, as notebook 3.3 prints.)
#
# YOUR ANSWER HERE

# %% [markdown]
# Read the plain run first: its training loss heads towards zero, while its validation loss
# reaches its lowest point early and then climbs. The model keeps getting more *confident* about
# images it has memorised, and that confidence costs it on new images. Weight decay keeps the
# training loss from collapsing and the validation loss lower at the end; dropout reaches a lower
# validation minimum than the plain run but wanders more (its training signal is noisier). The
# occasional spike in a curve is Adam meeting an unusually large gradient while its running
# average of squared gradients is small; the run recovers within a few epochs. Which remedy wins
# varies from problem to problem, and the gains on this easy data are modest; choosing among them
# is what the validation set is for.
#
# **Early stopping** needs no change to the model at all. The course's `Trainer` (the same one that
# pretrains a GPT in notebook 3.6) does it with `early_stopping_patience`: it evaluates every
# `eval_every` steps, keeps the best weights, and stops after that many evaluations without
# improvement, restoring the best weights at the end. Here it evaluates once per epoch:

# %%
steps_per_epoch = len(x_few) // 16
config = TrainConfig(
    max_steps=reg_epochs * steps_per_epoch,  # an upper bound; early stopping will end sooner
    batch_size=16,
    lr=1e-3,
    min_lr=1e-3,  # a constant rate, as in the runs above
    warmup_steps=0,
    weight_decay=0.0,
    eval_every=steps_per_epoch,  # once per epoch
    eval_steps=None,  # the whole validation set
    early_stopping_patience=10,
    log_every=steps_per_epoch,
    save_every=None,
    out_dir=str(cache_dir("runs", "ch03-early-stopping")),
)
torch.manual_seed(0)
model = MLP(wide)
trainer = Trainer(model, config, train_data=TensorDataset(x_few, y_few), val_data=TensorDataset(x_val, y_val),
                  loss_fn=lambda m, batch: F.cross_entropy(m(batch[0]), batch[1]))
trainer.fit()
cols = trainer.history_columns()
epochs_run = [s / steps_per_epoch for s in cols["step"]]
fig = plot_train_val({"early stopping": {"epoch": epochs_run, **cols}}, logy=True,
                     title="The Trainer with early_stopping_patience=10")
plt.show()
val_acc = (basics.predict(model, x_val).argmax(-1) == y_val).float().mean().item()
print(f"stopped after epoch {trainer.step // steps_per_epoch} of at most {reg_epochs}; "
      f"best val loss {trainer.best_val:.3f} at epoch {trainer.best_step // steps_per_epoch}; "
      f"restored weights: val accuracy {val_acc:.3f}")

# %% [markdown]
# ## Summary
#
# - Every optimiser starts from the mini-batch gradient. Momentum averages gradients over time;
#   RMSprop scales each coordinate by its typical gradient size; Adam does both; AdamW adds weight
#   decay kept apart from the gradient statistics. Our hand-written rules match `torch.optim`
#   exactly.
# - On a narrow valley SGD zig-zags, momentum overshoots and swings back, and the adaptive rules
#   head straight down; on the digits all reach a good model, and the learning rate matters more
#   than the rule.
# - Large models warm the learning rate up and then decay it along a cosine; `lr_at` is that
#   schedule.
# - Weights must start random and at a sensible scale: from zeros, the hidden units never
#   separate; PyTorch's default divides the signal's variance by about 3 per layer, Kaiming keeps
#   it constant behind ReLUs and Xavier behind tanh, as the measured statistics through 10 layers show.
# - A large model on little data overfits: training loss falls, validation loss rises. Weight
#   decay, dropout and early stopping each push back.
#
# Next, notebook 3.3 trains an MLP and a convolutional network on all the digits and looks closely
# at the mistakes they make.
