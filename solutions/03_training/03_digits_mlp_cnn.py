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
# # 3.3 · Reading handwritten digits: an MLP and a CNN
#
# Time to train complete classifiers on a complete task: all ten handwritten digits. This notebook
# trains the two classic model families side by side, then looks beyond the accuracy figure at
# *which* digits each model confuses:
#
# 1. the data and its fixed split;
# 2. a multi-layer perceptron (MLP) that sees an image as 64 unrelated numbers;
# 3. a convolutional network (CNN) that knows which pixels are neighbours;
# 4. evaluation: test accuracy, a confusion matrix, per-class precision and recall, and the
#    images the models get wrong;
# 5. a much larger dense network on the 3-versus-8 task of notebook 3.1, for a sense of proportion.

# %% tags=["imports"]
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from course_lib import fast_mode, pick, seed_everything
from course_lib import training_basics as basics
from course_lib.datasets import Splits, digits
from course_lib.metrics import accuracy, classification_report, confusion_matrix
from course_lib.mlp_cnn import MLP, DenseBinary, DigitCNN
from course_lib.plots import use_course_style
from course_lib.training_plots import (
    plot_confusion_matrix,
    plot_image_grid,
    plot_misclassified,
    plot_train_val,
)

use_course_style()
seed_everything(0)
torch.set_num_threads(1)  # the models here are tiny: splitting their matrix products over cores costs more than it saves

# %% [markdown]
# ## 3.3.1 The data
#
# 1,797 greyscale images of 8x8 pixels, scaled to $[0, 1]$, about 180 of each digit. The split is
# the one every notebook of this chapter uses: 80% for training, 10% for validation (choosing
# settings, deciding when to stop) and 10% for the final **test**, looked at once at the end.
# It is stratified, so each split holds every digit in the same proportion.

# %%
# NBVAL_CHECK_OUTPUT
images, labels = digits()
X = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 8, 8): one channel, as a CNN expects
y = torch.from_numpy(labels)
splits = Splits.make(labels, fractions=(0.8, 0.1, 0.1), seed=0)
x_train, x_val, x_test = splits.take(X)
y_train, y_val, y_test = splits.take(y)
for name, part in [("train", y_train), ("val", y_val), ("test", y_test)]:
    print(f"{name:<5} {len(part):>5} images; per digit: {np.bincount(part.numpy(), minlength=10).tolist()}")

# %%
fig = plot_image_grid(images[:30], [str(d) for d in labels[:30]], ncols=15, title="The first 30 digits")
plt.show()

# %% [markdown]
# ## 3.3.2 A multi-layer perceptron
#
# The MLP flattens each image to 64 numbers and passes them through a hidden layer of 128 ReLU
# units to 10 outputs, one score (**logit**) per digit. Softmax turns the scores into
# probabilities, $p_c = e^{z_c} / \sum_k e^{z_k}$, and the loss is the cross-entropy
# $-\log p_{y}$ of the true digit: the multi-class form of the loss from notebook 3.1
# (`F.cross_entropy` applies the softmax itself). Training uses Adam.

# %%
epochs = pick(fast=3, full=30)
torch.manual_seed(0)
mlp = MLP([64, 128, 10], activation="relu")
mlp_history = basics.fit_classifier(
    mlp, (x_train.flatten(1), y_train), (x_val.flatten(1), y_val),
    torch.optim.Adam(mlp.parameters(), lr=1e-3), epochs=epochs, batch_size=32, seed=0,
)
mlp_pred = basics.predict(mlp, x_test.flatten(1)).argmax(-1)
print(f"MLP: validation accuracy {mlp_history.val_accuracy[-1]:.3f}, test accuracy {accuracy(y_test, mlp_pred):.3f}")

# %% [markdown]
# ## 3.3.3 A convolutional network
#
# Shift a digit one pixel to the right and, to an MLP, it is 64 different numbers. A
# **convolution** instead slides one small filter over the image, so the same few weights look
# for the same stroke everywhere. For a 3x3 filter with weights $W$ on input channels $c$, the
# output at position $(i, j)$ is
#
# $$\text{out}_{o}(i, j) = b_o + \sum_{c} \sum_{u=0}^{2} \sum_{v=0}^{2} W_{o,c,u,v}\; x_c(i + u, j + v).$$
#
# **Max pooling** then keeps the largest value of each 2x2 block, halving the image and making
# the result a little insensitive to small shifts. `DigitCNN` stacks two rounds of
# convolution, ReLU and pooling (8x8 → 4x4 → 2x2, with 32 then 64 channels), then dropout and one
# linear layer to the 10 scores. It can run the sum above written out by hand
# (`explicit=True`, `course_lib.mlp_cnn.conv2d_explicit`) or PyTorch's kernels; both give the
# same numbers:

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
cnn = DigitCNN(image_size=8, channels=(32, 64), dropout=0.25)
cnn.eval()
with torch.no_grad():
    fast_path = cnn(x_val)
    cnn.explicit = True
    by_hand = cnn(x_val)
    cnn.explicit = False
print("CNN output shape:", tuple(fast_path.shape))
print("hand-written convolution and pooling equal PyTorch's within 1e-5:", torch.allclose(fast_path, by_hand, atol=1e-5))
assert torch.allclose(fast_path, by_hand, atol=1e-5)
print(f"parameters: MLP {sum(p.numel() for p in mlp.parameters()):,}, CNN {sum(p.numel() for p in cnn.parameters()):,}")

# %% [markdown]
# The CNN is trained with SGD and momentum, the classic recipe for convolutional networks:

# %%
cnn_history = basics.fit_classifier(
    cnn, (x_train, y_train), (x_val, y_val),
    torch.optim.SGD(cnn.parameters(), lr=0.01, momentum=0.9), epochs=epochs, batch_size=32, seed=0,
)
cnn_logits = basics.predict(cnn, x_test)
cnn_pred = cnn_logits.argmax(-1)
cnn_test_accuracy = accuracy(y_test, cnn_pred)
print(f"CNN: validation accuracy {cnn_history.val_accuracy[-1]:.3f}, test accuracy {cnn_test_accuracy:.3f}")
if not fast_mode():  # the short fast-mode run is only a smoke test
    assert cnn_test_accuracy >= 0.97, f"the CNN should reach 97% test accuracy, got {cnn_test_accuracy:.3f}"

# %%
fig = plot_train_val(
    {name: {"train_loss": h.train_loss, "val_loss": h.val_loss} for name, h in [("MLP", mlp_history), ("CNN", cnn_history)]},
    logy=True, title="Training and validation loss per epoch",
)
plt.show()

# %% [markdown]
# ## 3.3.4 Beyond accuracy
#
# One accuracy figure hides *where* a model fails. A **confusion matrix** counts, for every true
# digit (row), what the model predicted (column); everything off the diagonal is a mistake. From
# it come per-class **precision** (of the images called "8", the share that were 8s) and
# **recall** (of the real 8s, the share that were found), and their harmonic mean, **F1**.
# `course_lib.metrics` computes all of them from their definitions. First the MLP:

# %%
fig = plot_confusion_matrix(confusion_matrix(y_test, mlp_pred, labels=range(10)), [str(d) for d in range(10)],
                            title=f"MLP on the test set: accuracy {accuracy(y_test, mlp_pred):.3f}")
plt.show()
print(classification_report(y_test, mlp_pred, labels=list(range(10)), digits=3))

# %% [markdown]
# The images the MLP got wrong, captioned *true → predicted*. Several are hard even for a person
# at this resolution:

# %%
fig = plot_misclassified(x_test[:, 0].numpy(), y_test.numpy(), mlp_pred.numpy())
plt.show()

# %% [markdown]
# Now the CNN on the same test images:

# %%
fig = plot_confusion_matrix(confusion_matrix(y_test, cnn_pred, labels=range(10)), [str(d) for d in range(10)],
                            title=f"CNN on the test set: accuracy {cnn_test_accuracy:.3f}")
plt.show()
cnn_wrong = int((cnn_pred != y_test).sum())
print(f"the CNN gets {cnn_wrong} of {len(y_test)} test images wrong; the MLP {int((mlp_pred != y_test).sum())}")

# %% [markdown]
# With few or no mistakes to look at, the images the CNN was **least sure** about are more
# telling: those where its highest softmax probability is lowest. They are the borderline cases a
# little more training data or a shifted copy of each image (data augmentation) would help with.

# %%
probs = torch.softmax(cnn_logits, dim=-1)
confidence, guess = probs.max(dim=-1)
unsure = torch.argsort(confidence)[:10]
fig = plot_image_grid(
    x_test[unsure, 0].numpy(),
    [f"{int(y_test[i])}: said {int(guess[i])}\np={confidence[i]:.2f}" for i in unsure],
    ncols=10, title="The CNN's ten least confident test predictions (true digit: prediction, probability)",
)
plt.show()

# %% [markdown]
# ## 3.3.5 A big dense network on a small problem
#
# A common first network in Keras tutorials is a dense binary classifier: 1,024 ReLU units, another
# 1,024, one sigmoid output, binary cross-entropy and Adam. `course_lib.mlp_cnn.DenseBinary` is that
# network. Put it on notebook 3.1's task, 3s against 8s, where logistic regression (65 numbers)
# already did well:

# %%
pair = torch.from_numpy(np.flatnonzero((labels == 3) | (labels == 8)))
x_pair, y_pair = X[pair].flatten(1), (y[pair] == 8).float()
pair_splits = Splits.make(y_pair.numpy(), seed=0)
xp_train, xp_val, xp_test = pair_splits.take(x_pair)
yp_train, yp_val, yp_test = pair_splits.take(y_pair)
torch.manual_seed(0)
dense = DenseBinary(n_inputs=64, hidden=(1024, 1024))  # dense(x) = sigmoid(dense.body(x)): probabilities
networks = {"DenseBinary 64-1024-1024-1": dense.body, "logistic regression 64-1": MLP([64, 1])}  # both give logits
sizes = {}
for name, net in networks.items():
    basics.fit_classifier(
        net, (xp_train, yp_train), None, torch.optim.Adam(net.parameters(), lr=1e-3),
        epochs=pick(fast=3, full=30), batch_size=32, seed=0,
        loss_fn=lambda logits, target: F.binary_cross_entropy_with_logits(logits.squeeze(-1), target),
    )
    errors = int(((basics.predict(net, xp_test).squeeze(-1) > 0).float() != yp_test).sum())
    sizes[name] = sum(p.numel() for p in net.parameters())
    print(f"{name:<28} {sizes[name]:>10,} parameters, {errors} of {len(yp_test)} test images wrong")
print(f"the dense network has {sizes['DenseBinary 64-1024-1024-1'] / sizes['logistic regression 64-1']:,.0f} times "
      "as many parameters")

# %% [markdown]
# Thousands of times more parameters (the ratio is printed above) buy a test image or so on a
# task this simple, if anything: the capacity of a model should match the difficulty of its task and the amount of
# data. Large language models are large because predicting the next word of any text is an
# enormously hard task with enormous amounts of data, which is where the next notebook goes.
#
# ## Summary
#
# - An MLP treats an image as a list of numbers; a CNN slides small shared filters over it and
#   pools, which suits images and uses its weights more efficiently.
# - On the fixed test split the CNN reached the accuracy printed above (at least 97% in learner
#   mode, checked by an assertion); the MLP a little less.
# - A confusion matrix, per-class precision/recall/F1 and the misclassified or least confident
#   images say far more about a classifier than its accuracy alone.
# - More parameters are not automatically better: a dense network of about a million parameters
#   and a 65-parameter logistic regression score within a test image or so of each other on 3s
#   versus 8s.
