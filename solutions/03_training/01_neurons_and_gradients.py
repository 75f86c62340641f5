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
# # 3.1 · Training from one neuron: gradients by hand
#
# Chapter 3 is about **training**: how a model's numbers are changed, step by step, until it does
# its job. It starts as small as possible and ends by pretraining a GPT:
#
# 1. **this notebook**: one neuron, logistic regression, its gradient worked out by hand and checked
#    three ways, then backpropagation through a small network;
# 2. optimisers, learning-rate schedules, initialisation and regularisation;
# 3. an MLP and a CNN that read handwritten digits;
# 4. pretraining a GPT on BBC News (and on Chinese text);
# 5. scaling the run: mixed precision, gradient accumulation, checkpoints, several processes.
#
# Everything here is small enough to run in seconds on a laptop CPU.

# %% tags=["imports"]
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from course_lib import seed_everything
from course_lib import training_basics as basics
from course_lib.datasets import Splits, digits
from course_lib.mlp_cnn import MLP, Neuron
from course_lib.plots import use_course_style
from course_lib.training_plots import plot_curves, plot_image_grid

use_course_style()
seed_everything(0)
torch.set_num_threads(1)  # the models here are tiny: splitting their matrix products over cores costs more than it saves

# %% [markdown]
# ## 3.1.1 One neuron
#
# An artificial neuron takes numbers $x_1, \dots, x_n$, weighs each by a learned weight $w_i$, adds
# a learned bias $b$ and passes the sum through a non-linear function $\sigma$:
#
# $$z = \sum_{i=1}^{n} w_i x_i + b = w \cdot x + b, \qquad f(x) = \sigma(z).$$
#
# With the **sigmoid** $\sigma(z) = 1 / (1 + e^{-z})$ the output lies between 0 and 1 and can be
# read as a probability. `course_lib.mlp_cnn.Neuron` is exactly this formula; the cell checks it
# against the sum written out.

# %% tags=["nbval-check-output"]
neuron = Neuron(n_inputs=3)
x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])  # two inputs of three numbers each
by_hand = 1 / (1 + torch.exp(-(x @ neuron.w + neuron.b)))
print("neuron output shape:", tuple(neuron(x).shape))
print("equal to sigma(w.x + b) within 1e-7:", torch.allclose(neuron(x), by_hand, atol=1e-7))
assert torch.allclose(neuron(x), by_hand, atol=1e-7)

# %% [markdown]
# A neuron with a sigmoid is **logistic regression**: a model that answers a yes/no question. Our
# question: *is this handwritten digit an 8 or a 3?* Those two are the pair of digits that look
# most alike.
#
# ## 3.1.2 The data, and why it is normalised
#
# scikit-learn's digits are 8x8 greyscale images. We keep the 3s and 8s, flatten each image into
# 64 numbers and split the images once, with a fixed seed, into training, validation and test sets
# that keep the share of each class (`Splits.make` from `course_lib.datasets`).
#
# Gradient descent works best when every input feature has a similar scale, so we **standardise**:
# subtract each pixel's mean and divide by its standard deviation. Both statistics come from the
# *training* images only; using the test images would let information about them leak into the
# model.

# %% tags=["nbval-check-output"]
images, labels = digits()
pair = np.flatnonzero((labels == 3) | (labels == 8))
X_all = images[pair].reshape(len(pair), -1).astype(np.float64)  # (N, 64) pixels in [0, 1]
y_all = (labels[pair] == 8).astype(np.float64)  # 1 = "an eight", 0 = "a three"
splits = Splits.make(y_all, fractions=(0.8, 0.1, 0.1), seed=0)
X_train, X_val, X_test = splits.take(X_all)
y_train, y_val, y_test = splits.take(y_all)

mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-3  # +1e-3: some border pixels are always 0


def standardise(X):
    return (X - mean) / std


X_train, X_val, X_test = standardise(X_train), standardise(X_val), standardise(X_test)
for name, X, y in [("train", X_train, y_train), ("val", X_val, y_val), ("test", X_test, y_test)]:
    print(f"{name:<5} {X.shape}  eights: {int(y.sum()):>3}  threes: {int(len(y) - y.sum()):>3}")

# %%
first = [int(i) for i in np.flatnonzero(labels == 3)[:5]] + [int(i) for i in np.flatnonzero(labels == 8)[:5]]
fig = plot_image_grid(images[first], [str(labels[i]) for i in first], ncols=10)
plt.show()

# %% [markdown]
# ## 3.1.3 The loss: cross-entropy
#
# The neuron outputs $p_i = \sigma(w \cdot x_i + b)$, its probability that image $i$ is an 8. A good
# model gives a high $p_i$ when $y_i = 1$ and a low one when $y_i = 0$. The **binary cross-entropy**
# measures how surprised the model is by the true labels, averaged over the $N$ examples:
#
# $$L(w, b) = -\frac{1}{N} \sum_{i=1}^{N} \big[\, y_i \log p_i + (1 - y_i) \log(1 - p_i) \,\big].$$
#
# It is the negative log-likelihood of the labels, so minimising it is maximum-likelihood
# estimation. In code it is computed from the logit $z_i$ as $\log(1 + e^{z_i}) - y_i z_i$, which
# is the same number but never takes the log of a probability that rounded to zero.
#
# Before training, with $w = 0$ and $b = 0$, every $p_i = 0.5$ and the loss is $\ln 2$:

# %% tags=["nbval-check-output"]
w0 = np.zeros(X_train.shape[1])
loss0 = basics.logistic_loss(X_train, y_train, w0, 0.0)
print(f"loss with all weights zero: {loss0:.6f}; ln 2 = {np.log(2):.6f}")
assert abs(loss0 - np.log(2)) < 1e-12

# %% [markdown]
# ## 3.1.4 The gradient, by the chain rule
#
# To improve $w$ we need to know which way the loss goes when each weight changes: the gradient
# $\partial L / \partial w$. Follow one example through the chain
# $w \to z_i \to p_i \to L$:
#
# - $\partial z_i / \partial w = x_i$ and $\partial z_i / \partial b = 1$;
# - $\partial p_i / \partial z_i = \sigma(z_i)\,(1 - \sigma(z_i)) = p_i (1 - p_i)$;
# - $\partial L / \partial p_i = -\frac{1}{N}\left(\frac{y_i}{p_i} - \frac{1 - y_i}{1 - p_i}\right)$.
#
# Multiplying the last two, almost everything cancels: $\partial L / \partial z_i = (p_i - y_i) / N$,
# the *error* of example $i$. So
#
# $$\frac{\partial L}{\partial w} = \frac{1}{N} \sum_i (p_i - y_i)\, x_i = \frac{1}{N} X^\top (p - y),
# \qquad \frac{\partial L}{\partial b} = \frac{1}{N} \sum_i (p_i - y_i).$$
#
# Each example pulls the weights towards its own input, harder the more wrong the model is about it.
#
# ### Exercise 3.1a — the gradient of logistic regression
# Write `logistic_gradient(X, y, w, b)` in NumPy: `X` is (N, D), `y` (N,) of 0/1, `w` (D,), `b` a
# float. Return `(grad_w, grad_b)` with `grad_b` a float. The check compares it with PyTorch's
# autograd on five cases, including a single example and logits far from zero.

# %% tags=["exercise"]
def logistic_gradient(X, y, w, b):
    """Gradient of the mean binary cross-entropy of sigmoid(X @ w + b) with respect to (w, b)."""
    ### BEGIN SOLUTION
    p = 1 / (1 + np.exp(-(X @ w + b)))  # (N,) predicted probabilities
    error = p - y  # (N,) dL/dz, times N
    return X.T @ error / len(y), float(error.mean())
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_logistic_gradient

check_logistic_gradient(logistic_gradient)

# %% [markdown]
# ## 3.1.5 Three ways to get one gradient
#
# A hand-derived gradient is easy to get subtly wrong, so it is always checked. Two independent
# checks:
#
# - **finite differences**: nudge one weight by $\pm\varepsilon$ and watch the loss,
#   $\partial L / \partial w_j \approx \big(L(w + \varepsilon e_j) - L(w - \varepsilon e_j)\big) / 2\varepsilon$.
#   It needs two loss evaluations *per weight*, so it is only for checking;
# - **automatic differentiation**: PyTorch records every operation of the forward pass and applies
#   the chain rule backwards for us. This is how every network in the course gets its gradients.
#
# ### Exercise 3.1b — finite differences
# Write `numerical_gradient(f, x, eps)`: `f` takes a NumPy array shaped like `x` and returns a
# float; return the array of central differences, one entry of `x` nudged at a time, with the
# shape of `x`. Leave the caller's `x` as it was. The check compares with `course_lib`'s version on
# five cases, including a curved function with a large `eps`, where a one-sided difference
# $\big(L(w + \varepsilon e_j) - L(w)\big) / \varepsilon$ is visibly off, and a 2-D `x`.

# %% tags=["exercise"]
def numerical_gradient(f, x, eps=1e-6):
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every entry i of x."""
    ### BEGIN SOLUTION
    x = np.array(x, dtype=np.float64)  # a copy: nudging it leaves the caller's array alone
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):  # every index of an array of any shape
        saved = x[i]
        x[i] = saved + eps
        f_plus = f(x)
        x[i] = saved - eps
        f_minus = f(x)
        x[i] = saved
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_numerical_gradient

check_numerical_gradient(numerical_gradient)

# %% [markdown]
# We compare all three at a random point (from here on the notebook uses `course_lib`'s
# `logistic_gradient` and `numerical_gradient`, the same formulas as your answers).

# %% tags=["nbval-check-output"]
rng = np.random.default_rng(0)
w = rng.normal(size=64) * 0.1
b = 0.3
grad_w, grad_b = basics.logistic_gradient(X_train, y_train, w, b)

params = np.append(w, b)  # finite differences over all 65 numbers at once
numeric = basics.numerical_gradient(lambda v: basics.logistic_loss(X_train, y_train, v[:-1], v[-1]), params)

w_t = torch.tensor(w, requires_grad=True)
b_t = torch.tensor(b, dtype=torch.float64, requires_grad=True)
F.binary_cross_entropy_with_logits(torch.from_numpy(X_train) @ w_t + b_t, torch.from_numpy(y_train)).backward()

ours = np.append(grad_w, grad_b)
diff_numeric = np.abs(ours - numeric).max()
diff_autograd = np.abs(ours - np.append(w_t.grad.numpy(), b_t.grad.item())).max()
print("hand-written vs finite differences, equal within 1e-8:", diff_numeric < 1e-8)
print("hand-written vs autograd,           equal within 1e-12:", diff_autograd < 1e-12)
assert diff_numeric < 1e-8 and diff_autograd < 1e-12

# %% [markdown]
# ## 3.1.6 Gradient descent in NumPy
#
# Gradient descent takes a small step against the gradient, over and over:
#
# $$w \leftarrow w - \eta\, \frac{\partial L}{\partial w}, \qquad b \leftarrow b - \eta\, \frac{\partial L}{\partial b}.$$
#
# The step size $\eta$ is the **learning rate**. Here every step uses the whole training set
# ("full-batch"); the next notebooks use random mini-batches instead. The loop in
# `basics.logistic_regression_gd` is four lines: loss, gradient, two updates.

# %% tags=["nbval-check-output"]
steps = 200
w_gd, b_gd, losses_gd = basics.logistic_regression_gd(X_train, y_train, lr=0.5, steps=steps)


def accuracy(X, y, w, b):
    return float(np.mean((basics.sigmoid(X @ w + b) > 0.5) == y))


print(f"loss {losses_gd[0]:.3f} -> {losses_gd[-1]:.3f} after {steps} steps")
print(f"accuracy: train {accuracy(X_train, y_train, w_gd, b_gd):.3f}, "
      f"val {accuracy(X_val, y_val, w_gd, b_gd):.3f}, test {accuracy(X_test, y_test, w_gd, b_gd):.3f}")
assert losses_gd[-1] < 0.1 and accuracy(X_test, y_test, w_gd, b_gd) > 0.9

# %% [markdown] tags=["answer", "points=2"]
# ### Question 3.1d — what the accuracies say
# The trained model scores 1.000 on the training images, 0.946 on validation and 0.971 on test. How many
# images do the validation and test scores stand for (the split sizes are printed in 3.1.2)? Does the model
# do better on the test set than on the validation set, and what does the perfect training score tell you?
#
# ### BEGIN SOLUTION
# The validation set has 37 images and the test set 35, so 0.946 is 35 of 37 right (2 mistakes) and 0.971
# is 34 of 35 (1 mistake). The two held-out scores differ by one image, which says nothing about the model:
# another split could as easily reverse them, and with so few images each score is uncertain by several
# percentage points. The perfect training score, with the loss down from 0.693 to 0.010, says that a linear
# boundary in 64 dimensions separates all 285 training images; it measures fit, not how the model does on
# new digits. That is what the held-out images estimate: 69 of 72 right, with the caution that 72 images
# are few.
#
# Rubric: 1 point for converting both scores into images (2 of 37 and 1 of 35 wrong) and concluding that a
# difference of one image is no evidence either way; 1 point for saying that the perfect training score
# measures fit, not generalisation, which only the held-out images estimate.
# ### END SOLUTION

# %% [markdown]
# The learning rate sets the pace. Three runs of the same loop with rates 40 times apart:

# %%
curves = {}
for lr in (0.01, 0.5, 20.0):
    curves[f"lr = {lr:g}"] = basics.logistic_regression_gd(X_train, y_train, lr=lr, steps=steps)[2]
fig = plot_curves(curves, xlabel="gradient-descent step", ylabel="training loss", logy=True,
                  title="Logistic regression, 3 vs 8: the learning rate")
plt.show()
for name, losses in curves.items():
    print(f"{name:<10} training loss after {steps} steps: {losses[-1]:.2e}")

# %% [markdown]
# The smallest rate crawls. The largest drives the training loss towards zero fastest, and it does
# not blow up: the logistic loss flattens out as the weights grow, which makes this problem
# forgiving. A falling training loss is not the whole story, though: a model can fit its training
# images perfectly and still be wrong on new ones. Notebook 3.2 shows a rate that is too large for
# a network, and what to do about a model that fits its training data too well.

# %% [markdown]
# What did the neuron learn? Its 64 weights are one per pixel, so they can be drawn as an image.
# Red pixels push towards "8", blue ones towards "3": the closed loops on the left side of an 8
# are where a 3 has empty space.

# %%
fig, ax = plt.subplots(figsize=(3.6, 3.2))
limit = np.abs(w_gd).max()
im = ax.imshow(w_gd.reshape(8, 8), cmap="RdBu_r", vmin=-limit, vmax=limit)
fig.colorbar(im, ax=ax)
ax.set_title("weights: red = 8, blue = 3")
ax.axis("off")
plt.show()

# %% [markdown]
# ## 3.1.7 The same training with autograd
#
# In PyTorch we write only the forward pass and the loss; `loss.backward()` fills in `.grad` and an
# optimizer applies the update rule. With the same start, learning rate and float64 arithmetic,
# plain SGD in PyTorch follows exactly the path of our NumPy loop:

# %% tags=["nbval-check-output"]
w_t = torch.zeros(64, dtype=torch.float64, requires_grad=True)
b_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
optimizer = torch.optim.SGD([w_t, b_t], lr=0.5)
X_t, y_t = torch.from_numpy(X_train), torch.from_numpy(y_train)
for _ in range(steps):
    loss = F.binary_cross_entropy_with_logits(X_t @ w_t + b_t, y_t)
    optimizer.zero_grad()
    loss.backward()  # autograd: dL/dw and dL/db into w_t.grad and b_t.grad
    optimizer.step()  # w <- w - lr * grad
gap = max(np.abs(w_t.detach().numpy() - w_gd).max(), abs(b_t.item() - b_gd))
print("NumPy loop and PyTorch autograd reach the same weights within 1e-10:", gap < 1e-10)
assert gap < 1e-10

# %% [markdown]
# ## 3.1.8 Backpropagation through a network
#
# One neuron draws one straight line through the input space. Stacking layers of neurons, with a
# non-linearity between them, lets a network bend that line. A two-layer network for $C$ classes
# computes, for a batch $X$ of $B$ rows,
#
# $$z_1 = X W_1 + b_1, \quad h = \mathrm{ReLU}(z_1), \quad z_2 = h W_2 + b_2, \quad
# L = \mathrm{cross\text{-}entropy}(\mathrm{softmax}(z_2), y).$$
#
# **Backpropagation** is the chain rule applied from the loss back to the first layer, reusing
# each intermediate result on the way:
#
# 1. softmax and cross-entropy together give the same tidy error as before:
#    $\partial L / \partial z_2 = (\mathrm{softmax}(z_2) - \mathrm{onehot}(y)) / B$;
# 2. the last layer: $\partial L / \partial W_2 = h^\top \, \partial L/\partial z_2$ and
#    $\partial L / \partial b_2 = \sum_{\text{rows}} \partial L/\partial z_2$;
# 3. back through the weights: $\partial L / \partial h = \partial L/\partial z_2 \, W_2^\top$;
# 4. back through ReLU, which passes the gradient where $z_1 > 0$ and blocks it elsewhere:
#    $\partial L / \partial z_1 = \partial L/\partial h \odot [z_1 > 0]$;
# 5. the first layer, like step 2: $\partial L / \partial W_1 = X^\top \, \partial L/\partial z_1$,
#    $\partial L / \partial b_1 = \sum_{\text{rows}} \partial L/\partial z_1$.
#
# Every layer needs only the gradient arriving from above and what it stored on the way forward.
# That is why training keeps the forward pass's activations in memory (chapter 1 counted them).
#
# ### Exercise 3.1c — a backward pass
# Write `two_layer_backward(x, y, W1, b1, W2, b2)` with torch tensors (no `.backward()`!):
# `x` (B, D), integer labels `y` (B,), `W1` (D, H), `b1` (H,), `W2` (H, C), `b2` (C,). Return
# `(dW1, db1, dW2, db2)`. The check compares with autograd.

# %% tags=["exercise"]
def two_layer_backward(x, y, W1, b1, W2, b2):
    """Gradients of mean cross-entropy(relu(x @ W1 + b1) @ W2 + b2, y), by the chain rule."""
    ### BEGIN SOLUTION
    z1 = x @ W1 + b1  # (B, H)
    h = torch.relu(z1)  # (B, H)
    logits = h @ W2 + b2  # (B, C)
    dz2 = (torch.softmax(logits, dim=-1) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)) / len(y)
    dW2, db2 = h.T @ dz2, dz2.sum(0)
    dh = dz2 @ W2.T  # (B, H)
    dz1 = dh * (z1 > 0).to(dh.dtype)
    dW1, db1 = x.T @ dz1, dz1.sum(0)
    return dW1, db1, dW2, db2
    ### END SOLUTION


# %% tags=["check"]
from course_lib.exercises.ch03 import check_two_layer_backward

check_two_layer_backward(two_layer_backward)

# %% [markdown]
# `course_lib.training_basics.mlp_backward` does the same for an `MLP` of any depth and any of the
# activations ReLU, sigmoid and tanh (PyTorch's `nn.Linear` stores $W^\top$, so the formulas appear
# transposed there). Checked against autograd on a three-layer tanh network and all ten digits:

# %% tags=["nbval-check-output"]
X10 = torch.from_numpy(images.reshape(len(images), -1))  # (1797, 64) float32 in [0, 1]
y10 = torch.from_numpy(labels)
mlp = MLP([64, 32, 16, 10], activation="tanh").double()
loss_hand, grads_hand = basics.mlp_backward(mlp, X10.double(), y10)

loss_auto = F.cross_entropy(mlp(X10.double()), y10)
loss_auto.backward()
worst = max(
    (g[name] - getattr(layer, name).grad).abs().max().item()
    for g, layer in zip(grads_hand, mlp.layers)
    for name in ("weight", "bias")
)
print("layers:", [tuple(layer.weight.shape) for layer in mlp.layers])
print("loss equal within 1e-12:", abs(loss_hand.item() - loss_auto.item()) < 1e-12)
print("every gradient equal within 1e-12:", worst < 1e-12)
assert worst < 1e-12

# %% [markdown]
# And the hand-written gradients really train. Plain gradient descent with `mlp_backward` and the
# update $W \leftarrow W - \eta\, \partial L / \partial W$, on the training split of all ten digits:

# %%
splits10 = Splits.make(labels, seed=0)
x_tr, x_va, _ = splits10.take(X10)
y_tr, y_va, _ = splits10.take(y10)
torch.manual_seed(0)
net = MLP([64, 32, 10], activation="relu")
history = []
with torch.no_grad():
    for _ in range(300):
        loss, grads = basics.mlp_backward(net, x_tr, y_tr)
        for layer, g in zip(net.layers, grads):
            layer.weight -= 0.5 * g["weight"]
            layer.bias -= 0.5 * g["bias"]
        history.append(loss.item())
    val_acc = (net(x_va).argmax(-1) == y_va).float().mean().item()
fig = plot_curves({"training loss": history}, xlabel="gradient-descent step", ylabel="cross-entropy",
                  title="A 64-32-10 MLP trained with hand-written backprop")
plt.show()
print(f"validation accuracy after 300 steps: {val_acc:.3f}")

# %% [markdown]
# ## Summary
#
# - A neuron computes $\sigma(w \cdot x + b)$; with a sigmoid and the cross-entropy loss it is
#   logistic regression.
# - The gradient of the cross-entropy with respect to the logit is simply *prediction minus label*;
#   the chain rule carries it to every weight.
# - A hand-derived gradient is checked against finite differences and autograd; all three agreed
#   here to within rounding.
# - Gradient descent repeats $w \leftarrow w - \eta \nabla L$; the learning rate decides whether it
#   crawls, converges or blows up.
# - Backpropagation is the chain rule applied layer by layer from the loss downwards; PyTorch's
#   autograd does exactly this for any network.
#
# Next: better update rules than plain gradient descent, schedules for the learning rate, and what
# to do when a model learns its training data too well.
