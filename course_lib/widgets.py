"""Interactive explorers for the notebooks, built from ipywidgets and testable without a browser.

An explorer owns a matplotlib :class:`~matplotlib.figure.Figure` (not a pyplot figure, so nothing is
shown twice), draws into it when a control changes and shows the result as a PNG in an
``ipywidgets.Image``. That needs no matplotlib widget backend, so it works the same in JupyterLab,
Notebook and VS Code, and a test can set a control's value and read back what was drawn.
"""

from __future__ import annotations

import html
import io
from typing import Any

import torch
from matplotlib.figure import Figure

from course_lib.plots import attention_heatmap

EXAMPLE_SENTENCE = "The animal didn't cross the street because it was too tired."
MAX_TOKENS = 48  # beyond this the token labels of a heatmap become unreadable


def _ipywidgets():
    try:
        import ipywidgets
    except ModuleNotFoundError as err:  # pragma: no cover - ipywidgets is a course dependency
        raise ModuleNotFoundError(
            "the explorers need ipywidgets; run `pip install ipywidgets` (JupyterLab >= 3 shows them as is)"
        ) from err
    return ipywidgets


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


class AttentionExplorer:
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
        self.widget = w.VBox([self.text, w.HBox([self.layer, self.head]), self.status, self.image])

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
            self.status.value = f"<span style='color:#b5443b'>{html.escape(str(err))}</span>"
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
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        self.image.value = buffer.getvalue()
        self.status.value = (
            f"{len(self.tokens)} tokens &middot; row = the token that looks, column = the token it looks at "
            "&middot; each row sums to 1"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


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
