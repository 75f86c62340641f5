"""Chapter 5's ready-made classifiers (course_lib.ready_models): trained once, then loaded from the cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib import ready_models


def test_digit_cnn_is_trained_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    bundle = ready_models.digit_cnn(fast=True)
    assert bundle.labels == list(ready_models.DIGIT_LABELS) and bundle.config["architecture"] == "DigitCNN"
    assert (ready_models.bundle_dir("digit-cnn", fast=True) / "model.pt").is_file()
    assert ready_models.bundle_dir("digit-cnn", fast=True).is_relative_to(tmp_path)
    with pytest.raises(ValueError, match="ready-made ones are"):
        ready_models.bundle_dir("gpt")
    x, _, splits = ready_models.digit_data()
    before = bundle.model(splits.take(x).test)

    import course_lib.training_basics as basics

    monkeypatch.setattr(basics, "fit_classifier", lambda *a, **k: pytest.fail("retrained a cached model"))
    again = ready_models.digit_cnn(fast=True)
    torch.testing.assert_close(again.model(splits.take(x).test), before)


def test_bbc_topic_classifier_is_minilm_plus_the_probe_on_the_cached_features(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    from course_lib.deploy import predict_proba
    from course_lib.encoder import SentenceEncoder

    recipe = ready_models.topic_recipe(fast=True)
    articles, labels, splits = ready_models.bbc_topic_data(recipe)
    assert len(articles) == 5 * recipe.per_topic and sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]
    features = ready_models.bbc_body_features(
        recipe, SentenceEncoder.from_minilm(device="cpu"), articles, False
    )
    head, history = ready_models.train_topic_head(recipe, features, labels, splits)
    assert len(history.train_loss) == recipe.epochs

    bundle = ready_models.bbc_topic_classifier(fast=True, progress=False)
    assert bundle.config["max_length"] == recipe.max_length and bundle.labels[3] == "sports"
    some = [articles[i].body for i in splits.test]
    expected = F.softmax(head(features[torch.as_tensor(splits.test)]), dim=-1)
    torch.testing.assert_close(predict_proba(bundle, some), expected.detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_bbc_topic_split_has_no_test_body_in_training(fast):
    recipe = ready_models.topic_recipe(fast=fast)
    articles, labels, splits = ready_models.bbc_topic_data(recipe)
    train, val, test = splits.take([a.body for a in articles])
    assert test and not set(test) & set(train) and not set(val) & set(train) and not set(test) & set(val)
    assert len({a.body for a in articles}) == len(articles)  # no body twice at all
    if not fast:
        assert len(articles) == 2092 and len(test) >= 200
