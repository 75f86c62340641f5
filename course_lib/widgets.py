"""Interactive explorers for the notebooks, built from ipywidgets and testable without a browser.

An explorer owns a matplotlib :class:`~matplotlib.figure.Figure` (not a pyplot figure, so nothing is
shown twice), draws into it when a control changes and shows the result as a PNG in an
``ipywidgets.Image``. That needs no matplotlib widget backend, so it works the same in JupyterLab,
Notebook and VS Code, and a test can set a control's value (or click a button) and read back what was
drawn or written.

- :func:`attention_explorer` (chapter 2): one attention head of an encoder at a time;
- :func:`generation_panel` (chapter 5): a prompt and the sampling controls of a GPT;
- :func:`classifier_panel` (chapter 5): any text classifier, its label and class probabilities.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from course_lib.generation import generate_text
from course_lib.plots import attention_heatmap

EXAMPLE_SENTENCE = "The animal didn't cross the street because it was too tired."
MAX_TOKENS = 48  # beyond this the token labels of a heatmap become unreadable
ERROR_STYLE = "color:#b5443b"
TOP_K_MAX = 200  # the top-k slider's range is 0 (off) .. 200; a k above the vocabulary size keeps every token


def _ipywidgets():
    try:
        import ipywidgets
    except ModuleNotFoundError as err:  # pragma: no cover - ipywidgets is a course dependency
        raise ModuleNotFoundError(
            "the explorers need ipywidgets; run `pip install ipywidgets` (JupyterLab >= 3 shows them as is)"
        ) from err
    return ipywidgets


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


KERNEL_NOTE = (
    "<div class='course-kernel-note' style='font-size:90%;color:#555'>&#9432; These controls run Python: "
    "they work in JupyterLab with this notebook's kernel running (<code>make lab</code>, or download the "
    "page as <code>.ipynb</code>). A static page, such as the course website, shows the first result "
    "only.</div>"
)


def _kernel_note() -> Any:
    """The line every panel shows above its controls: where they work and where they do not."""
    return _ipywidgets().HTML(KERNEL_NOTE)


def _error(err: Exception) -> str:
    return f"<span style='{ERROR_STYLE}'>{html.escape(str(err))}</span>"


@torch.no_grad()
def attention_maps(
    encoder: torch.nn.Module, tokenizer: Any, text: str, max_tokens: int = MAX_TOKENS
) -> tuple[list[str], torch.Tensor]:
    """The tokens of ``text`` and the encoder's attention weights, (n_layer, n_head, T, T) on the CPU.

    ``encoder`` is a :class:`course_lib.encoder.Encoder` (``forward(..., return_attentions=True)``) and
    ``tokenizer`` its tokenizer (``tokens(text)``, ``encode_batch``). Texts longer than ``max_tokens``
    tokens are refused rather than cut, because a cut sentence has different attention.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    tokens = tokenizer.tokens(text)
    if len(tokens) > max_tokens:
        raise ValueError(
            f"the text has {len(tokens)} tokens ([CLS] and [SEP] included), more than max_tokens="
            f"{max_tokens}; shorten it, or pass a larger max_tokens"
        )
    batch = tokenizer.encode_batch([text])
    if batch["input_ids"].shape[1] != len(tokens):
        raise ValueError(
            f"the tokenizer gave {len(tokens)} token labels but {batch['input_ids'].shape[1]} ids; "
            "pass the tokenizer that belongs to this encoder"
        )
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        _, attentions = encoder(
            batch["input_ids"].to(device), batch["attention_mask"].to(device), return_attentions=True
        )
    finally:
        encoder.train(was_training)
    maps = torch.stack([a[0] for a in attentions])  # (n_layer, n_head, T, T)
    return tokens, maps.float().cpu()


class _Panel:
    """A panel displays as its ``widget`` (an ipywidgets box), so a cell can end with the panel itself."""

    widget: Any

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class AttentionExplorer(_Panel):
    """Type a sentence, pick a layer and a head, see that head's attention map.

    Attributes: ``widget`` (the VBox to display), the controls ``text``, ``layer`` and ``head``,
    ``image`` (the displayed PNG), ``status`` (a line of HTML), ``figure`` and ``ax`` (what is drawn),
    ``tokens`` and ``maps`` ((n_layer, n_head, T, T)) of the current sentence.
    The model runs once per sentence; moving a slider only redraws.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        tokenizer: Any,
        sentence: str = EXAMPLE_SENTENCE,
        layer: int = 0,
        head: int = 0,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        w = _ipywidgets()
        n_layer, n_head = encoder.config.n_layer, encoder.config.n_head
        for name, value, n in (("layer", layer, n_layer), ("head", head, n_head)):
            if not 0 <= value < n:
                raise ValueError(f"{name}={value} is out of range: this model has {n} {name}s, 0 .. {n - 1}")
        self.encoder, self.tokenizer, self.max_tokens = encoder, tokenizer, max_tokens
        self.tokens, self.maps = attention_maps(encoder, tokenizer, sentence, max_tokens)

        slider = dict(continuous_update=False, style={"description_width": "3em"})
        self.layer = w.IntSlider(value=layer, min=0, max=n_layer - 1, description="layer", **slider)
        self.head = w.IntSlider(value=head, min=0, max=n_head - 1, description="head", **slider)
        self.text = w.Text(
            value=sentence,
            description="sentence",
            continuous_update=False,  # recompute when Enter is pressed or the box loses focus
            layout=w.Layout(width="95%"),
        )
        self.status = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="640px"))
        self.widget = w.VBox(
            [_kernel_note(), self.text, w.HBox([self.layer, self.head]), self.status, self.image]
        )

        self.figure = Figure(figsize=(6.4, 5.8), layout="constrained")
        self.ax = self.figure.add_subplot()
        self.text.observe(self._on_text, names="value")
        self.layer.observe(self._on_slider, names="value")
        self.head.observe(self._on_slider, names="value")
        self.redraw()

    @property
    def weights(self) -> torch.Tensor:
        """The (T, T) map on show: ``maps[layer, head]``."""
        return self.maps[self.layer.value, self.head.value]

    def _on_text(self, change: dict) -> None:
        try:
            tokens, maps = attention_maps(self.encoder, self.tokenizer, change["new"], self.max_tokens)
        except (ValueError, TypeError) as err:
            self.status.value = _error(err)
            return
        self.tokens, self.maps = tokens, maps
        self.redraw()

    def _on_slider(self, change: dict) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw ``maps[layer, head]`` with the tokens as labels and show it."""
        layer, head = self.layer.value, self.head.value
        self.figure.clear()
        self.ax = self.figure.add_subplot()
        attention_heatmap(
            self.weights, self.tokens, ax=self.ax, title=f"layer {layer}, head {head}", colorbar=True
        )
        self.image.value = _png(self.figure)
        self.status.value = (
            f"{len(self.tokens)} tokens &middot; row = the token that looks, column = the token it looks at "
            "&middot; each row sums to 1"
        )


def attention_explorer(
    encoder: torch.nn.Module,
    tokenizer: Any,
    sentence: str = EXAMPLE_SENTENCE,
    layer: int = 0,
    head: int = 0,
    max_tokens: int = MAX_TOKENS,
) -> AttentionExplorer:
    """An :class:`AttentionExplorer` for ``encoder`` (e.g. from ``course_lib.encoder.load_minilm()``).

    Show it with ``display(explorer.widget)``; set ``explorer.layer.value`` (or ``head``, ``text``)
    from code to change it the way the controls do.
    """
    return AttentionExplorer(encoder, tokenizer, sentence, layer, head, max_tokens)


# ----------------------------------------------------------------------------------------------------
# Chapter 5: a generation panel and a classifier panel

EXAMPLE_PROMPT = "The government said"


class GenerationPanel(_Panel):
    """Type a prompt, set temperature, top-k, top-p, length and seed, press Generate: the model's
    continuation appears under the controls, after the prompt in bold.

    Attributes: ``widget`` (the VBox to display), the controls ``prompt``, ``temperature``, ``top_k``
    (0 = off), ``top_p`` (1.0 = off), ``max_new_tokens``, ``seed`` and ``button``; ``output`` (the HTML
    of the text), ``status`` (a line of HTML) and ``continuation`` (the last generated text, a str).
    Moving a control does not rerun the model; the button (or :meth:`generate`) does.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        prompt: str = EXAMPLE_PROMPT,
        max_new_tokens: int = 60,
        temperature: float = 0.8,
        top_k: int | None = 50,
        top_p: float | None = None,
        seed: int = 0,
    ) -> None:
        w = _ipywidgets()
        k_max = TOP_K_MAX
        if top_k is not None and not 1 <= top_k <= k_max:
            raise ValueError(f"top_k={top_k} is outside the slider's range 1 .. {k_max} (or None for off)")
        if top_p is not None and not 0.05 <= top_p <= 1.0:
            raise ValueError(f"top_p={top_p} is outside the slider's range 0.05 .. 1 (or None for off)")
        if not 0.0 <= temperature <= 2.0:
            raise ValueError(f"temperature={temperature} is outside the slider's range 0 .. 2")
        if not 1 <= max_new_tokens <= 400:
            raise ValueError(f"max_new_tokens={max_new_tokens} is outside the slider's range 1 .. 400")
        self.model, self.tokenizer = model, tokenizer
        self.continuation = ""
        style = {"description_width": "7em"}
        self.prompt = w.Textarea(
            value=prompt, description="prompt", style=style, layout=w.Layout(width="95%")
        )
        self.temperature = w.FloatSlider(
            value=temperature, min=0.0, max=2.0, step=0.05, description="temperature", style=style
        )
        self.top_k = w.IntSlider(
            value=top_k or 0, min=0, max=k_max, description="top-k (0 = off)", style=style
        )
        self.top_p = w.FloatSlider(
            value=top_p or 1.0, min=0.05, max=1.0, step=0.05, description="top-p (1 = off)", style=style
        )
        self.max_new_tokens = w.IntSlider(
            value=max_new_tokens, min=1, max=400, description="new tokens", style=style
        )
        self.seed = w.IntText(value=seed, description="seed", style=style, layout=w.Layout(width="14em"))
        self.button = w.Button(description="Generate", button_style="primary", icon="play")
        self.output = w.HTML()
        self.status = w.HTML()
        self.widget = w.VBox(
            [
                _kernel_note(),
                self.prompt,
                w.HBox([self.temperature, self.max_new_tokens]),
                w.HBox([self.top_k, self.top_p]),
                w.HBox([self.seed, self.button]),
                self.status,
                self.output,
            ]
        )
        self.button.on_click(lambda _: self.generate())
        self.generate()

    def settings(self) -> dict[str, Any]:
        """The controls as :func:`course_lib.generation.generate_text` keyword arguments."""
        return {
            "max_new_tokens": int(self.max_new_tokens.value),
            "temperature": float(self.temperature.value),
            "top_k": int(self.top_k.value) or None,
            "top_p": float(self.top_p.value) if self.top_p.value < 1.0 else None,
            "seed": int(self.seed.value),
        }

    def generate(self) -> str:
        """Run the model with the current controls and show the text; returns the continuation."""
        settings = self.settings()
        t0 = time.perf_counter()
        try:
            text = generate_text(self.model, self.tokenizer, self.prompt.value, **settings)
        except (ValueError, TypeError) as err:
            self.status.value = _error(err)
            return self.continuation
        seconds = time.perf_counter() - t0
        self.continuation = text
        self.output.value = (
            "<div style='white-space:pre-wrap;font-family:monospace;border-left:3px solid #888;"
            f"padding-left:0.6em'><b>{html.escape(self.prompt.value)}</b>{html.escape(text)}</div>"
        )
        how = (
            "greedy (temperature 0)"
            if settings["temperature"] == 0
            else (
                f"temperature {settings['temperature']:g}, top-k {settings['top_k'] or 'off'}, "
                f"top-p {settings['top_p'] or 'off'}, seed {settings['seed']}"
            )
        )
        self.status.value = f"{len(text)} new characters &middot; {how} &middot; {seconds:.2f} s"
        return text


def generation_panel(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: str = EXAMPLE_PROMPT,
    max_new_tokens: int = 60,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    seed: int = 0,
) -> GenerationPanel:
    """A :class:`GenerationPanel` for a :class:`course_lib.gpt.GPT` and its tokenizer (e.g. from
    ``course_lib.pretrained.bbc_gpt()``); it generates once right away. Show it with
    ``display(panel.widget)``; from code, set e.g. ``panel.temperature.value`` and call ``panel.generate()``.
    """
    return GenerationPanel(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed)


def _probabilities(predict_proba: Callable[[list[str]], Any], text: str, n_labels: int) -> np.ndarray:
    """``predict_proba([text])`` as a float array (n_labels,), checked to be a probability vector."""
    out = predict_proba([text])
    if isinstance(out, torch.Tensor):
        out = out.detach().float().cpu().numpy()
    probs = np.asarray(out, dtype=np.float64)
    if probs.shape != (1, n_labels):
        raise ValueError(
            f"predict_proba([text]) returned shape {probs.shape}, expected (1, {n_labels}): one row of "
            f"{n_labels} class probabilities, one per label"
        )
    if (probs < 0).any() or abs(probs.sum() - 1.0) > 1e-3:
        raise ValueError(
            f"predict_proba returned {probs[0].round(4).tolist()}, which is not a probability vector "
            "(non-negative, summing to 1); apply a softmax to logits first"
        )
    return probs[0]


class ClassifierPanel(_Panel):
    """Type a text (or pick an example): the classifier's label and a bar chart of its class probabilities.

    Attributes: ``widget`` (the VBox to display), ``text`` (the text box: the model runs when it changes,
    i.e. on leaving the box), ``button`` (runs it too), ``examples`` (a drop-down, or None), ``label``
    (HTML with the winning label), ``image`` (the bar chart as PNG), ``status``, ``figure`` and ``ax``
    (what is drawn) and ``probs`` (the current probabilities, one per label).
    """

    def __init__(
        self,
        predict_proba: Callable[[list[str]], Any],
        labels: Sequence[str],
        text: str = "",
        examples: Sequence[str] = (),
        title: str = "",
    ) -> None:
        w = _ipywidgets()
        self.labels = [str(label) for label in labels]
        if len(self.labels) < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {self.labels}")
        self.predict_proba, self.title = predict_proba, title
        self.probs = np.full(len(self.labels), np.nan)
        self.text = w.Textarea(
            value=text,
            placeholder="type a text, then click outside the box or press Classify",
            continuous_update=False,
            layout=w.Layout(width="95%", height="5em"),
        )
        self.button = w.Button(description="Classify", button_style="primary")
        self.examples = None
        controls = [self.button]
        if examples:
            options = [("(examples)", "")] + [(e if len(e) <= 60 else e[:57] + "...", e) for e in examples]
            self.examples = w.Dropdown(options=options, value="", layout=w.Layout(width="30em"))
            self.examples.observe(self._on_example, names="value")
            controls.append(self.examples)
        self.label = w.HTML()
        self.status = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="520px"))
        self.widget = w.VBox(
            [_kernel_note(), self.text, w.HBox(controls), self.label, self.status, self.image]
        )
        self.figure = Figure(figsize=(5.2, 0.9 + 0.32 * len(self.labels)), layout="constrained")
        self.ax = self.figure.add_subplot()
        self.text.observe(lambda _: self.classify(), names="value")
        self.button.on_click(lambda _: self.classify())
        if text:
            _probabilities(predict_proba, text, len(self.labels))  # a wrong classifier fails here, not later
            self.classify()
        else:
            self.status.value = "type a text to classify"

    def _on_example(self, change: dict) -> None:
        if change["new"]:
            self.text.value = change["new"]  # runs the classifier through the text box's observer

    def classify(self) -> np.ndarray:
        """Classify the text box's text, show the label and the bars; returns the probabilities."""
        text = self.text.value
        if not text.strip():
            self.status.value = "type a text to classify"
            return self.probs
        try:
            probs = _probabilities(self.predict_proba, text, len(self.labels))
        except (ValueError, TypeError) as err:
            self.status.value = _error(err)
            return self.probs
        self.probs = probs
        best = int(np.argmax(probs))
        self.label.value = (
            f"<b style='font-size:1.2em'>{html.escape(self.labels[best])}</b> "
            f"&nbsp;(probability {probs[best]:.3f})"
        )
        self.status.value = f"{len(text)} characters"
        self.redraw()
        return probs

    def redraw(self) -> None:
        """Draw one horizontal bar per label (the winner darker) and show it."""
        self.figure.clear()
        self.ax = self.figure.add_subplot()
        y = np.arange(len(self.labels))
        colours = ["#3b6ea5" if i == int(np.argmax(self.probs)) else "#a9bfd6" for i in y]
        self.ax.barh(y, self.probs, color=colours)
        for i, p in enumerate(self.probs):
            self.ax.text(min(p + 0.01, 0.9), i, f"{p:.3f}", va="center", fontsize=9)
        self.ax.set_yticks(y, self.labels)
        self.ax.invert_yaxis()  # the first label on top
        self.ax.set_xlim(0, 1)
        self.ax.set_xlabel("probability")
        if self.title:
            self.ax.set_title(self.title)
        self.image.value = _png(self.figure)


def classifier_panel(
    predict_proba: Callable[[list[str]], Any],
    labels: Sequence[str],
    text: str = "",
    examples: Sequence[str] = (),
    title: str = "",
) -> ClassifierPanel:
    """A :class:`ClassifierPanel` for any text classifier: ``predict_proba(list_of_texts)`` returns an
    array (N, len(labels)) of class probabilities (scikit-learn's ``predict_proba``, or
    ``lambda texts: course_lib.deploy.predict_proba(bundle, texts)``). Show it with
    ``display(panel.widget)``; from code, set ``panel.text.value``.
    """
    return ClassifierPanel(predict_proba, labels, text, examples, title)
