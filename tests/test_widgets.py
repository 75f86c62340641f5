"""The explorers, driven headlessly: set a control or click a button, check what was drawn and shown.

The reference for every drawn map is the real all-MiniLM-L6-v2 run directly (and, once, transformers'
BertModel with the same weights); the reference for every label is the tokenizer.
"""

from __future__ import annotations

import html
import io
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_lib.encoder import load_minilm, minilm_dir
from course_lib.generation import generate_text
from course_lib.gpt import GPT, get_config
from course_lib.plots import attention_heatmap, heatmap_grid, positional_encoding_figure
from course_lib.tokenizers import CharTokenizer
from course_lib.widgets import (
    EXAMPLE_SENTENCE,
    attention_explorer,
    attention_maps,
    classifier_panel,
    generation_panel,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference loads from the package folder, never a hub

# The drawn array is the model's float32 map widened to float64, so it matches the model's own output
# exactly; transformers' BertModel sums in a different order, so it gets a few float32 ulps.
DRAWN_ATOL = 1e-6
BERT_ATOL = 1e-5
OTHER_SENTENCE = "She gave him the book because he asked for it."


@pytest.fixture(scope="module")
def minilm():
    return load_minilm(device="cpu")


@pytest.fixture(scope="module")
def explorer(minilm):
    return attention_explorer(*minilm, sentence=EXAMPLE_SENTENCE, layer=2, head=5)


def model_maps(minilm, text: str) -> torch.Tensor:
    """(n_layer, n_head, T, T) straight from the encoder: the reference for what is drawn."""
    encoder, tokenizer = minilm
    batch = tokenizer.encode_batch([text])
    with torch.no_grad():
        _, attentions = encoder(batch["input_ids"], batch["attention_mask"], return_attentions=True)
    return torch.stack([a[0] for a in attentions])


def drawn(ex) -> np.ndarray:
    images = ex.ax.get_images()
    assert len(images) == 1, f"expected one image on the axes, found {len(images)}"
    return np.ma.getdata(images[0].get_array())


def tick_texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def shown_png(ex) -> np.ndarray:
    return plt.imread(io.BytesIO(ex.image.value), format="png")


def test_controls_match_the_model_and_are_in_the_displayed_box(explorer, minilm):
    encoder, _ = minilm
    assert explorer.layer.max == encoder.config.n_layer - 1 and explorer.layer.min == 0
    assert explorer.head.max == encoder.config.n_head - 1 and explorer.head.min == 0
    assert (explorer.layer.value, explorer.head.value) == (2, 5)
    assert explorer.text.value == EXAMPLE_SENTENCE

    def children(w):
        return [w] + [c for child in getattr(w, "children", ()) for c in children(child)]

    shown = children(explorer.widget)
    for control in (explorer.text, explorer.layer, explorer.head, explorer.image, explorer.status):
        assert any(c is control for c in shown), f"{control!r} is not inside explorer.widget"
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()
    note = explorer.widget.children[0]  # a static page (the website) cannot run the controls: say so
    assert "course-kernel-note" in note.value and "make lab" in note.value and "website" in note.value


def test_the_first_drawing_is_the_chosen_layer_and_head(explorer, minilm):
    ref = model_maps(minilm, EXAMPLE_SENTENCE)[2, 5].double().numpy()
    np.testing.assert_allclose(drawn(explorer), ref, atol=DRAWN_ATOL, rtol=0)
    np.testing.assert_allclose(drawn(explorer).sum(axis=1), 1.0, atol=1e-5)  # softmax rows
    assert explorer.ax.get_title() == "layer 2, head 5"


def test_tick_labels_are_the_tokens_on_both_axes(explorer, minilm):
    tokens = minilm[1].tokens(EXAMPLE_SENTENCE)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "animal" in tokens
    assert tick_texts(explorer.ax.get_xticklabels()) == tokens
    assert tick_texts(explorer.ax.get_yticklabels()) == tokens
    assert explorer.tokens == tokens


@pytest.mark.parametrize("layer, head", [(0, 0), (5, 11), (3, 1)])
def test_moving_the_sliders_redraws_that_head_and_changes_the_shown_image(explorer, minilm, layer, head):
    before = explorer.image.value
    explorer.layer.value, explorer.head.value = layer, head
    ref = model_maps(minilm, explorer.text.value)[layer, head].double().numpy()
    np.testing.assert_allclose(drawn(explorer), ref, atol=DRAWN_ATOL, rtol=0)
    np.testing.assert_allclose(explorer.weights.double().numpy(), ref, atol=DRAWN_ATOL, rtol=0)
    assert explorer.ax.get_title() == f"layer {layer}, head {head}"
    assert explorer.image.value != before, "the displayed PNG did not change"
    png = shown_png(explorer)
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100


def test_typing_a_new_sentence_reruns_the_model(explorer, minilm):
    explorer.layer.value, explorer.head.value = 4, 7
    explorer.text.value = OTHER_SENTENCE
    tokens = minilm[1].tokens(OTHER_SENTENCE)
    ref = model_maps(minilm, OTHER_SENTENCE)
    assert explorer.tokens == tokens and tuple(explorer.maps.shape) == (6, 12, len(tokens), len(tokens))
    np.testing.assert_allclose(drawn(explorer), ref[4, 7].double().numpy(), atol=DRAWN_ATOL, rtol=0)
    assert tick_texts(explorer.ax.get_xticklabels()) == tokens
    assert f"{len(tokens)} tokens" in explorer.status.value


def test_a_too_long_sentence_is_refused_in_the_status_line_and_the_old_map_stays(minilm):
    ex = attention_explorer(*minilm, sentence=OTHER_SENTENCE, max_tokens=16)
    before, png = drawn(ex).copy(), ex.image.value
    ex.text.value = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    assert "more than max_tokens=16" in ex.status.value and "shorten it" in ex.status.value
    np.testing.assert_array_equal(drawn(ex), before)
    assert ex.image.value == png
    ex.text.value = EXAMPLE_SENTENCE  # a good sentence afterwards works again
    assert ex.tokens == minilm[1].tokens(EXAMPLE_SENTENCE)


@pytest.mark.slow
def test_drawn_maps_equal_transformers_bert_attentions(minilm):
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()
    batch = minilm[1].encode_batch([OTHER_SENTENCE])
    with torch.no_grad():
        ref = bert(**batch, output_attentions=True).attentions
    ex = attention_explorer(*minilm, sentence=OTHER_SENTENCE)
    for layer, head in [(0, 3), (5, 0)]:
        ex.layer.value, ex.head.value = layer, head
        np.testing.assert_allclose(drawn(ex), ref[layer][0, head].double().numpy(), atol=BERT_ATOL, rtol=0)


def test_attention_maps_shape_and_errors(minilm):
    tokens, maps = attention_maps(*minilm, "hello world")
    assert tokens == ["[CLS]", "hello", "world", "[SEP]"]
    assert tuple(maps.shape) == (6, 12, 4, 4) and maps.device.type == "cpu"
    with pytest.raises(TypeError, match="must be a string"):
        attention_maps(*minilm, ["hello"])
    with pytest.raises(ValueError, match="shorten it"):
        attention_maps(*minilm, "a " * 100)


@pytest.mark.parametrize("layer, head, bad", [(6, 0, "layer=6"), (0, 12, "head=12"), (-1, 0, "layer=-1")])
def test_out_of_range_layer_or_head_names_the_valid_range(minilm, layer, head, bad):
    with pytest.raises(ValueError, match=bad) as err:
        attention_explorer(*minilm, layer=layer, head=head)
    assert "0 .. " in str(err.value)


# ----------------------------------------------------------------------------------- plot helpers


def test_heatmap_draws_the_values_labels_and_masks_infinities():
    scores = torch.tensor([[0.5, -float("inf")], [0.25, 0.75]])
    image = attention_heatmap(scores, ["a", "b"], annotate=True, vmin=None)
    ax = image.axes
    array = image.get_array()
    assert array.mask.tolist() == [[False, True], [False, False]]
    np.testing.assert_array_equal(np.ma.getdata(array)[1], [0.25, 0.75])
    assert tick_texts(ax.get_xticklabels()) == ["a", "b"] == tick_texts(ax.get_yticklabels())
    assert sorted(t.get_text() for t in ax.texts) == sorted(["0.50", "-inf", "0.25", "0.75"])
    plt.close(ax.figure)


def test_heatmap_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"must be 2-D.*maps\[layer, head\]"):
        attention_heatmap(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="3 key labels for a map with 2 columns"):
        attention_heatmap(torch.zeros(2, 2), ["a", "b", "c"])
    with pytest.raises(ValueError, match="one title per matrix"):
        heatmap_grid([torch.zeros(2, 2)], titles=["x", "y"])
    with pytest.raises(ValueError, match="outside the table's 4 features"):
        positional_encoding_figure(torch.zeros(3, 4), dims=(0, 9))


def test_heatmap_grid_shares_one_colour_scale():
    mats = [torch.full((3, 3), 0.25), torch.eye(3), torch.full((3, 3), 0.5)]
    fig = heatmap_grid(mats, titles=["a", "b", "c"], keys=["x", "y", "z"], ncols=2)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 3
    assert {im.get_clim() for im in images} == {(0.0, 1.0)}
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    plt.close(fig)


# ----------------------------------------------------------------------------------- chapter 5 panels

PANEL_TEXT = "the cat sat on the mat. the dog sat on the log."


@pytest.fixture(scope="module")
def tiny_gpt():
    tokenizer = CharTokenizer.train(PANEL_TEXT + "<>&")
    torch.manual_seed(0)
    return GPT(get_config("tiny", vocab_size=tokenizer.vocab_size, block_size=32)).eval(), tokenizer


def test_generation_panel_shows_what_generate_text_gives_for_its_settings(tiny_gpt):
    panel = generation_panel(*tiny_gpt, prompt="the cat", max_new_tokens=12, temperature=0.9, top_k=5, seed=4)
    settings = {"max_new_tokens": 12, "temperature": 0.9, "top_k": 5, "top_p": None, "seed": 4}
    assert panel.settings() == settings
    expected = generate_text(*tiny_gpt, "the cat", 12, temperature=0.9, top_k=5, seed=4)
    assert panel.continuation == expected  # generated once on construction
    assert "<b>the cat</b>" in panel.output.value and html.escape(expected) in panel.output.value
    assert "temperature 0.9, top-k 5, top-p off, seed 4" in panel.status.value
    assert "course-kernel-note" in panel.widget.children[0].value


def test_generation_panel_button_reruns_with_the_controls(tiny_gpt):
    panel = generation_panel(*tiny_gpt, prompt="the dog", max_new_tokens=10)
    panel.temperature.value, panel.top_k.value, panel.top_p.value, panel.seed.value = 1.2, 0, 0.5, 7
    panel.max_new_tokens.value = 15
    assert panel.settings()["top_k"] is None and panel.settings()["top_p"] == 0.5
    before = panel.output.value
    panel.button.click()
    assert panel.continuation == generate_text(*tiny_gpt, "the dog", 15, temperature=1.2, top_p=0.5, seed=7)
    assert panel.output.value != before
    panel.temperature.value = 0.0
    panel.button.click()
    assert panel.continuation == generate_text(*tiny_gpt, "the dog", 15, temperature=0.0)
    assert "greedy" in panel.status.value


def test_generation_panel_escapes_html_and_reports_errors_in_the_status_line(tiny_gpt):
    panel = generation_panel(*tiny_gpt, prompt="<b>&", max_new_tokens=5)
    assert "<b>&lt;b&gt;&amp;</b>" in panel.output.value
    shown, text = panel.output.value, panel.continuation
    panel.prompt.value = ""
    assert panel.generate() == text  # nothing new: the last text stays
    assert "prompt is empty" in panel.status.value and panel.output.value == shown


@pytest.mark.parametrize(
    "kw, bad", [({"top_k": 500}, "top_k=500"), ({"top_p": 0.0}, "top_p=0.0"), ({"temperature": 3.0}, "3.0")]
)
def test_generation_panel_refuses_settings_its_sliders_cannot_show(tiny_gpt, kw, bad):
    with pytest.raises(ValueError, match=bad):
        generation_panel(*tiny_gpt, **kw)


LABELS = ["animals", "money", "other"]


def keyword_classifier(texts):
    """A transparent stand-in classifier: softmax of keyword counts."""
    words = {"animals": ("cat", "dog"), "money": ("bank", "shares")}
    counts = [[sum(t.count(w) for w in words.get(label, ())) for label in LABELS] for t in texts]
    return torch.softmax(torch.tensor(counts, dtype=torch.float32) * 2.0, dim=-1)


def drawn_bars(panel) -> list[float]:
    return [bar.get_width() for bar in panel.ax.patches]


def test_classifier_panel_shows_the_label_and_one_bar_per_probability():
    panel = classifier_panel(keyword_classifier, LABELS, text="the cat and the dog", title="topics")
    assert "course-kernel-note" in panel.widget.children[0].value
    expected = keyword_classifier(["the cat and the dog"])[0].double().numpy()
    np.testing.assert_allclose(panel.probs, expected, rtol=1e-6)
    np.testing.assert_allclose(drawn_bars(panel), expected, rtol=1e-6)
    assert [t.get_text() for t in panel.ax.get_yticklabels()] == LABELS
    assert "animals" in panel.label.value and f"{expected.max():.3f}" in panel.label.value
    assert panel.ax.get_title() == "topics" and plt.imread(io.BytesIO(panel.image.value)).ndim == 3


def test_classifier_panel_reruns_on_new_text_examples_and_the_button():
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return keyword_classifier(texts)

    panel = classifier_panel(counting, LABELS, text="cat", examples=["bank shares fell", "nothing here"])
    panel.text.value = "the bank"
    assert panel.label.value.startswith("<b") and "money" in panel.label.value
    np.testing.assert_allclose(drawn_bars(panel), keyword_classifier(["the bank"])[0].numpy(), rtol=1e-6)
    panel.examples.value = "bank shares fell"
    assert panel.text.value == "bank shares fell" and calls[-1] == ["bank shares fell"]
    n = len(calls)
    panel.button.click()
    assert len(calls) == n + 1


def test_classifier_panel_errors_go_to_the_status_line_or_fail_early():
    with pytest.raises(ValueError, match=r"expected \(1, 3\)"):
        classifier_panel(lambda texts: np.ones((1, 2)) / 2, LABELS, text="hi")
    with pytest.raises(ValueError, match="not a probability vector"):
        classifier_panel(lambda texts: np.array([[2.0, -1.0, 0.0]]), LABELS, text="hi")
    with pytest.raises(ValueError, match="at least 2 labels"):
        classifier_panel(keyword_classifier, ["one"])

    def picky(texts):
        if "x" in texts[0]:
            raise ValueError("cannot read an x")
        return keyword_classifier(texts)

    panel = classifier_panel(picky, LABELS)
    assert "type a text" in panel.status.value and np.isnan(panel.probs).all()
    panel.text.value = "cat"
    good = panel.probs.copy()
    panel.text.value = "x"
    assert "cannot read an x" in panel.status.value
    np.testing.assert_array_equal(panel.probs, good)  # the last good answer stays on show
