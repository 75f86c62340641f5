"""The cached chapter-3 GPT: trained once in fast mode, then loaded, resumed, and read by the CLI."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import cli, pretrained
from course_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from course_lib.tokenizers import BPETokenizer

RECIPE = pretrained.FAST_RECIPE
MIN_IMPROVEMENT = 0.3  # nats: 30 steps of the fast recipe move the val loss well below ln(512) = 6.24


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory):
    """A cache directory holding the fast-mode model, trained once for the whole module."""
    root = tmp_path_factory.mktemp("course_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_CACHE", str(root))
        mp.delenv("COURSE_FAST", raising=False)
        model, tokenizer = pretrained.bbc_gpt(fast=True, progress=False, device="cpu")
        yield root, model, tokenizer


@pytest.fixture
def in_cache(trained_cache, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(trained_cache[0]))
    return trained_cache


@pytest.mark.slow
def test_bbc_gpt_trains_a_model_that_learned_something(in_cache):
    _, model, tokenizer = in_cache
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == RECIPE.vocab_size
    assert model.config.vocab_size == tokenizer.vocab_size and not model.training
    ckpt = load_checkpoint(pretrained.checkpoint_path(RECIPE))
    assert ckpt["step"] == RECIPE.train["max_steps"] and ckpt["meta"]["recipe_key"] == RECIPE.key
    val = [r["val_loss"] for r in ckpt["history"] if "val_loss" in r]
    assert val[0] > val[-1] + MIN_IMPROVEMENT


@pytest.mark.slow
def test_a_second_call_loads_the_same_weights_without_training(in_cache, monkeypatch):
    _, model, tokenizer = in_cache

    def no_training(*args, **kwargs):
        raise AssertionError("bbc_gpt trained again although a finished checkpoint was cached")

    monkeypatch.setattr(pretrained, "pretrain", no_training)
    again, tok_again = pretrained.bbc_gpt(fast=True, progress=False, device="cpu")
    ids = torch.tensor([tokenizer.encode("The government said on Monday")])
    torch.testing.assert_close(again(ids)[0], model(ids)[0], atol=0, rtol=0)
    assert tok_again.merges == tokenizer.merges


@pytest.mark.slow
def test_the_checkpoint_works_with_the_command_line_generator(in_cache, capsys):
    path = pretrained.checkpoint_path(RECIPE)
    args = [
        "generate",
        "--checkpoint",
        str(path),
        "--prompt",
        "The",
        "--max-new-tokens",
        "5",
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.startswith("The")


@pytest.mark.slow
def test_an_interrupted_run_is_reported_then_resumed(in_cache):
    path = pretrained.checkpoint_path(RECIPE)
    ckpt = load_checkpoint(path)
    finished = dict(ckpt)
    save_checkpoint({**ckpt, "step": 10}, path)  # as if training had stopped at step 10
    try:
        with pytest.raises(CheckpointError, match=r"stopped at step 10 of 30.*train_if_missing=True"):
            pretrained.load_bbc_gpt(RECIPE, device="cpu")
        with pytest.raises(CheckpointError, match="stopped at step 10"):
            pretrained.bbc_gpt(train_if_missing=False, fast=True, progress=False)
        pretrained.bbc_gpt(fast=True, progress=False, device="cpu")
        assert load_checkpoint(path)["step"] == RECIPE.train["max_steps"]
    finally:
        save_checkpoint(finished, path)


@pytest.mark.slow
def test_a_checkpoint_of_another_recipe_is_refused(in_cache):
    path = pretrained.checkpoint_path(RECIPE)
    ckpt = load_checkpoint(path)
    save_checkpoint({**ckpt, "meta": {**ckpt["meta"], "recipe_key": "0123456789ab"}}, path)
    try:
        with pytest.raises(CheckpointError, match="was trained with recipe '0123456789ab'.*retrain"):
            pretrained.load_bbc_gpt(RECIPE)
    finally:
        save_checkpoint(ckpt, path)


@pytest.mark.slow
def test_the_tokenizer_never_saw_the_validation_articles(in_cache):
    train_docs, val_docs = pretrained.bbc_documents(RECIPE)
    fresh = BPETokenizer.train(train_docs, RECIPE.vocab_size, show_progress=False)
    assert pretrained.bbc_tokenizer(RECIPE).merges == fresh.merges
    train_ids, val_ids = pretrained.bbc_tokens(RECIPE, in_cache[2])
    assert len(train_ids) > 5 * len(val_ids) > 0


def test_without_a_checkpoint_and_without_training_the_error_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"run notebook 3\.6.*bbc_gpt\(train_if_missing=True\)"):
        pretrained.bbc_gpt(train_if_missing=False, fast=True)


def test_documents_are_split_by_article_in_a_fixed_order():
    train, val = pretrained.bbc_documents(RECIPE)
    assert len(train) + len(val) == RECIPE.max_docs
    assert len(val) == round(RECIPE.max_docs * RECIPE.val_fraction)
    assert not set(train) & set(val)
    assert pretrained.bbc_documents(RECIPE) == (train, val)


def test_the_modes_have_different_recipes_and_cache_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    assert pretrained.bbc_recipe(fast=True) is pretrained.FAST_RECIPE
    assert pretrained.bbc_recipe(fast=False) is pretrained.FULL_RECIPE
    monkeypatch.setenv("COURSE_FAST", "1")
    assert pretrained.bbc_recipe() is pretrained.FAST_RECIPE
    fast_dir, full_dir = pretrained.FAST_RECIPE.run_dir, pretrained.FULL_RECIPE.run_dir
    assert fast_dir != full_dir and "fast" in fast_dir.name and "full" in full_dir.name
    changed = dataclasses.replace(RECIPE, vocab_size=600)
    assert changed.key != RECIPE.key


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mode": "medium"}, "mode must be 'full' or 'fast'"),
        ({"val_fraction": 0.7}, r"val_fraction must be in \(0, 0\.5\)"),
        ({"max_docs": 3}, "max_docs must be at least 10"),
        ({"train": {"max_steps": 5, "out_dir": "/tmp/x"}}, "must not set 'out_dir'"),
        ({"train": {"max_step": 5}}, r"unknown TrainConfig key\(s\) \['max_step'\]"),
    ],
)
def test_bad_recipes_name_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(RECIPE, **change)


def test_topic_splits_test_on_articles_the_gpt_never_saw_and_share_no_text():
    recipe = pretrained.bbc_recipe(fast=True)
    train, val, test = pretrained.bbc_topic_splits(recipe)
    train_docs, val_docs = pretrained.bbc_documents(recipe)
    texts = [{a.text for a in part} for part in (train, val, test)]
    assert texts[2] <= set(val_docs) and not texts[2] & set(train_docs)
    assert texts[0] | texts[1] <= set(train_docs)
    assert not texts[0] & texts[1] and not texts[0] & texts[2] and not texts[1] & texts[2]
    assert len(train) + len(val) == len(set(train_docs))
    assert {a.label for a in val} == {a.label for a in train}  # stratified: every topic in both
