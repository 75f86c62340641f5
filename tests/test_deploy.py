"""Deployment: bundles that load back to the same outputs, torch.export / ONNX graphs that compute what the
model computes, throughput rows, and the command-line predictor."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the MiniLM tokenizer comes from its package folder

from course_lib.checkpoint import CheckpointError  # noqa: E402
from course_lib.deploy import (  # noqa: E402
    ARCHITECTURES,
    TEXT_ARCHITECTURES,
    batched_throughput,
    build_model,
    encode_texts,
    export_onnx,
    export_torch,
    load_exported,
    load_for_inference,
    onnx_available,
    predict_proba,
    print_predictions,
    save_for_inference,
)
from course_lib.metrics import format_table  # noqa: E402
from course_lib.mlp_cnn import MLP, DigitCNN  # noqa: E402

SAME_ATOL = 1e-6  # the same weights through the same kernels: equal but for reduction order
EXPORT_ATOL = 1e-5  # an exported graph may fuse or reorder fp32 ops
PRINT_ATOL = 5e-5 + 1e-7  # the CLI prints probabilities with 4 decimals
LABELS = ["business", "entertainment", "politics", "sports", "tech"]


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory):
    from course_lib.tokenizers import BPETokenizer

    text = ["Shares in the bank rose after profits beat forecasts.", "The band released a new album."] * 5
    return BPETokenizer.train(text, vocab_size=280, show_progress=False).save(
        tmp_path_factory.mktemp("tok") / "bpe.json"
    )


@pytest.fixture(scope="module")
def wordpiece_path():
    from course_lib.encoder import minilm_dir

    return minilm_dir() / "tokenizer.json"


def _tiny(arch: str, bpe_path, wordpiece_path):
    """(model, config, tokenizer file or None, example input) for each architecture the bundle knows."""
    torch.manual_seed(0)
    gpt = {"vocab_size": 280, "block_size": 32, "n_layer": 1, "n_head": 2, "d_model": 16}
    enc = {"vocab_size": 30522, "max_position": 32, "n_layer": 1, "n_head": 2, "d_model": 16, "d_ff": 32}
    configs = {
        "MLP": ({"sizes": [64, 32, 5]}, None),
        "DigitCNN": ({"channels": [4, 8], "n_classes": 5}, None),
        "GPT": (gpt, None),
        "GPTClassifier": ({"gpt": gpt, "n_classes": 5}, bpe_path),
        "EncoderClassifier": ({"encoder": enc, "n_classes": 5}, wordpiece_path),
    }
    kwargs, tok = configs[arch]
    config = {"architecture": arch, "kwargs": kwargs, "labels": LABELS, "max_length": 32}
    model = build_model(config).eval()
    x = torch.rand(3, 64) if arch in ("MLP", "DigitCNN") else torch.randint(0, 280, (3, 10))
    return model, config, tok, x


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_bundle_round_trip_gives_the_same_outputs(arch, tmp_path, bpe_path, wordpiece_path):
    model, config, tok, x = _tiny(arch, bpe_path, wordpiece_path)
    save_for_inference(model, tmp_path / "bundle", config, tokenizer_path=tok)
    sidecar = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert sidecar["architecture"] == arch and sidecar["labels"] == LABELS
    bundle = load_for_inference(tmp_path / "bundle", device="cpu")
    assert not bundle.model.training and bundle.labels == LABELS
    with torch.no_grad():
        ref, out = model(x), bundle.model(x)
    ref, out = (ref[0], out[0]) if isinstance(ref, tuple) else (ref, out)
    torch.testing.assert_close(out, ref, atol=SAME_ATOL, rtol=0)
    assert (bundle.tokenizer is None) == (tok is None)


def test_text_bundles_classify_text_like_the_model(tmp_path, bpe_path, wordpiece_path):
    texts = ["Profits at the bank beat forecasts", "A new album", "x"]
    for arch in ("GPTClassifier", "EncoderClassifier"):
        model, config, tok, _ = _tiny(arch, bpe_path, wordpiece_path)
        bundle = load_for_inference(save_for_inference(model, tmp_path / arch, config, tok), device="cpu")
        batch = encode_texts(bundle, texts)
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        probs = predict_proba(bundle, texts)
        for i, text in enumerate(texts):  # one text at a time, no padding: the reference
            single = encode_texts(bundle, [text])
            with torch.no_grad():
                logits, _ = model(single["input_ids"], attention_mask=single["attention_mask"])
            torch.testing.assert_close(probs[i], F.softmax(logits[0], -1), atol=1e-5, rtol=0)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3), atol=1e-6, rtol=0)


def test_load_refuses_files_that_are_more_than_tensors(tmp_path):
    model = MLP([4, 3])
    path = save_for_inference(model, tmp_path / "b", {"architecture": "MLP", "kwargs": {"sizes": [4, 3]}})
    torch.save({"layers.0.weight": Evil(), "layers.0.bias": torch.zeros(3)}, path / "model.pt")
    with pytest.raises(ValueError, match="holds more than tensors"):
        load_for_inference(path, device="cpu")


class Evil:
    """An object a plain pickle would rebuild by running code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_bundle_errors_name_the_fix(tmp_path):
    model = MLP([8, 4, 2])
    with pytest.raises(ValueError, match="does not describe this model"):
        save_for_inference(model, tmp_path / "a", {"architecture": "MLP", "kwargs": {"sizes": [8, 5, 2]}})
    with pytest.raises(KeyError, match="register_architecture"):
        save_for_inference(model, tmp_path / "a", {"architecture": "Transformer9000"})
    with pytest.raises(KeyError, match='needs an "architecture" key'):
        save_for_inference(model, tmp_path / "a", {"kwargs": {}})
    with pytest.raises(ValueError, match="do not fit MLP"):
        build_model({"architecture": "MLP", "kwargs": {"widths": [1, 2]}})
    with pytest.raises(ValueError, match="tokenizer_path"):
        gpt = {"vocab_size": 10, "block_size": 8, "n_layer": 1, "n_head": 1, "d_model": 4}
        cfg = {"architecture": "GPTClassifier", "kwargs": {"gpt": gpt, "n_classes": 2}}
        save_for_inference(build_model(cfg), tmp_path / "g", cfg)
    with pytest.raises(FileNotFoundError, match="not an inference bundle"):
        load_for_inference(tmp_path / "nowhere")
    path = save_for_inference(model, tmp_path / "ok", {"architecture": "MLP", "kwargs": {"sizes": [8, 4, 2]}})
    state = torch.load(path / "model.pt", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path / "model.pt")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_for_inference(path, device="cpu")
    cfg = {"architecture": "MLP", "kwargs": {"sizes": [8, 4, 2]}}
    bundle = load_for_inference(save_for_inference(model, tmp_path / "m", cfg), device="cpu")
    with pytest.raises(ValueError, match="no tokenizer"):
        predict_proba(bundle, ["some text"])


@pytest.mark.parametrize(
    "model, shape", [(MLP([64, 32, 10]), (4, 64)), (DigitCNN(channels=(4, 8)), (4, 1, 8, 8))]
)
def test_export_torch_round_trip_matches_the_model(model, shape, tmp_path):
    torch.manual_seed(1)
    model.train()  # export must trace the eval graph (no dropout) and restore the mode afterwards
    path = export_torch(model, torch.randn(shape), tmp_path / "model.pt2")
    assert model.training
    exported = load_exported(path, trusted=True)
    model.eval()
    for batch in (shape[0], 9):  # the batch dimension stays dynamic
        x = torch.randn(batch, *shape[1:])
        torch.testing.assert_close(exported(x), model(x), atol=EXPORT_ATOL, rtol=EXPORT_ATOL)
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_torch(model, torch.randn(shape), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="export_torch"):
        load_exported(tmp_path / "missing.pt2")


@pytest.mark.slow
@pytest.mark.skipif(not onnx_available(), reason="optional packages onnx and onnxscript are not installed")
def test_export_onnx_matches_the_model(tmp_path):
    torch.manual_seed(2)
    model = MLP([64, 32, 10]).eval()
    path = export_onnx(model, torch.randn(4, 64), tmp_path / "mlp.onnx")
    assert path.stat().st_size > 4 * 64 * 32  # the fp32 weights are inside the file
    assert not path.with_name("mlp.onnx.data").exists()
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(7, 64)
    (y,) = session.run(None, {"input_0": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), model(x).detach(), atol=EXPORT_ATOL, rtol=EXPORT_ATOL)


def _token_batch(batch: int, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded: row i keeps its first length - i tokens."""
    ids = torch.randint(0, vocab, (batch, length))
    mask = torch.ones_like(ids)
    for i in range(batch):
        mask[i, max(1, length - i) :] = 0
    return ids, mask


@pytest.mark.parametrize("arch", sorted(TEXT_ARCHITECTURES))
def test_text_classifiers_export_with_free_batch_and_length(arch, tmp_path, bpe_path, wordpiece_path):
    model, *_ = _tiny(arch, bpe_path, wordpiece_path)
    example = _token_batch(3, 10, 280)
    path = export_torch(model, example, tmp_path / "m.pt2", dynamic_dims=(0, 1))
    exported = load_exported(path, trusted=True)  # a file this test wrote itself
    for batch, length in ((3, 10), (5, 7), (2, 20)):  # other batch sizes and lengths than traced
        ids, mask = _token_batch(batch, length, 280)
        (got, _), (ref, _) = exported(ids, mask), model(ids, mask)
        torch.testing.assert_close(got, ref, atol=EXPORT_ATOL, rtol=EXPORT_ATOL)
    # the checks that read values are skipped only while tracing: the eager model still says what is wrong
    with pytest.raises(ValueError, match="ids must lie"):
        model(torch.full((1, 4), 10**6), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"dynamic_dims=\(0, 2\).*shape \(2, 4\)"):
        export_torch(MLP([4, 2]), torch.randn(2, 4), tmp_path / "mlp.pt2", dynamic_dims=(0, 2))


@pytest.mark.slow
@pytest.mark.skipif(not onnx_available(), reason="optional packages onnx and onnxscript are not installed")
def test_encoder_classifier_exports_to_onnx(tmp_path, bpe_path, wordpiece_path):
    ort = pytest.importorskip("onnxruntime")
    model, *_ = _tiny("EncoderClassifier", bpe_path, wordpiece_path)
    path = export_onnx(model, _token_batch(3, 10, 280), tmp_path / "enc.onnx", dynamic_dims=(0, 1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = _token_batch(6, 17, 280)
    (y,) = session.run(None, {"input_0": ids.numpy(), "input_1": mask.numpy()})
    torch.testing.assert_close(
        torch.from_numpy(y), model(ids, mask)[0].detach(), atol=EXPORT_ATOL, rtol=EXPORT_ATOL
    )


def test_export_onnx_without_the_packages_says_what_to_install(tmp_path, monkeypatch):
    import course_lib.deploy as deploy

    monkeypatch.setattr(deploy, "onnx_available", lambda: False)
    with pytest.raises(ModuleNotFoundError, match="pip install onnx onnxscript"):
        deploy.export_onnx(MLP([4, 2]), torch.randn(2, 4), tmp_path / "m.onnx")


def test_batched_throughput_rows_and_table():
    model = MLP([16, 32, 4])
    rows = batched_throughput(model, torch.randn(32, 16), batch_sizes=(1, 8, 32), repeats=3, warmup=1)
    assert [r["batch_size"] for r in rows] == [1, 8, 32]
    for r in rows:
        assert r["latency_ms"] > 0
        assert r["items_per_s"] == pytest.approx(r["batch_size"] / (r["latency_ms"] / 1e3))
    table = format_table(rows)
    assert (
        table.splitlines()[0] == "| batch_size | latency_ms | items_per_s |" and len(table.splitlines()) == 5
    )
    with pytest.raises(ValueError, match="pass more inputs"):
        batched_throughput(model, torch.randn(4, 16), batch_sizes=(8,))


@pytest.mark.parametrize("arch", ["EncoderClassifier", "GPTClassifier"])
def test_print_predictions_prints_labels_and_probabilities(arch, tmp_path, capsys, bpe_path, wordpiece_path):
    model, config, tok, _ = _tiny(arch, bpe_path, wordpiece_path)
    path = save_for_inference(model, tmp_path / "clf", config, tokenizer_path=tok)
    texts = ["Shares rose after profits beat forecasts", "The band played a new album"]
    print_predictions(path, texts, top=5, device="cpu")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == texts[0] and out[6] == texts[1] and len(out) == 12
    expected = predict_proba(load_for_inference(path, device="cpu"), texts)
    for block, probs in ((out[1:6], expected[0]), (out[7:12], expected[1])):
        printed = [re.match(r"\s+(\S+)\s+([0-9.]+)$", line).groups() for line in block]
        values = [float(v) for _, v in printed]
        assert values == sorted(values, reverse=True)  # best first
        for label, value in printed:
            assert abs(float(value) - float(probs[LABELS.index(label)])) <= PRINT_ATOL
        assert sorted(lab for lab, _ in printed) == sorted(LABELS)


def test_the_command_line_predict_is_print_predictions(tmp_path, capsys, bpe_path, wordpiece_path):
    from course_lib.cli import main

    model, config, tok, _ = _tiny("GPTClassifier", bpe_path, wordpiece_path)
    path = save_for_inference(model, tmp_path / "clf", config, tokenizer_path=tok)
    text = "Shares rose after profits beat forecasts"
    print_predictions(path, [text], device="cpu")
    direct = capsys.readouterr().out
    assert main(["predict", str(path), text, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == direct and direct.strip()


@pytest.mark.parametrize("arch", ["DigitCNN", "MLP"])
def test_print_predictions_reads_image_files_like_the_digits(arch, tmp_path, capsys):
    """Real digits written as 32 x 32 PNGs, dark ink on white (as a scan or a drawing would be), and as a
    .npy stack: the CLI must give the probabilities of the original 8 x 8 arrays."""
    from PIL import Image

    from course_lib.datasets import digits

    images, _ = digits()  # (N, 8, 8) in [0, 1]
    chosen = images[:3]
    torch.manual_seed(0)
    kwargs = {"channels": [4, 8], "n_classes": 10} if arch == "DigitCNN" else {"sizes": [64, 32, 10]}
    config = {"architecture": arch, "kwargs": kwargs, "labels": [str(d) for d in range(10)]}
    path = save_for_inference(build_model(config).eval(), tmp_path / "digits", config)
    files = []
    for i, img in enumerate(chosen):
        paper = np.round((1.0 - img) * 255).astype(np.uint8)  # ink is dark on a white page
        Image.fromarray(paper).resize((32, 32), Image.Resampling.NEAREST).save(tmp_path / f"d{i}.png")
        files.append(str(tmp_path / f"d{i}.png"))
    np.save(tmp_path / "stack.npy", chosen)
    x = torch.from_numpy(chosen).unsqueeze(1)  # (3, 1, 8, 8)
    expected = predict_proba(
        load_for_inference(path, device="cpu"), x if arch == "DigitCNN" else x.flatten(1)
    )
    for inputs, names in ((files, ["d0.png", "d1.png", "d2.png"]), ([str(tmp_path / "stack.npy")], None)):
        print_predictions(path, inputs, top=10, device="cpu")
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 3 * 11
        assert [out[11 * i] for i in range(3)] == (names or ["image 0", "image 1", "image 2"])
        for i in range(3):
            printed = dict(
                re.match(r"\s+(\S+)\s+([0-9.]+)$", line).groups() for line in out[11 * i + 1 : 11 * i + 11]
            )
            for label, value in printed.items():  # PNG stores 8 bits a pixel: 1/510 of rounding at most
                assert abs(float(value) - float(expected[i, int(label)])) <= 2e-3
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*/ 16"):
        np.save(tmp_path / "raw.npy", chosen * 16)
        print_predictions(path, [str(tmp_path / "raw.npy")])
    with pytest.raises(FileNotFoundError, match="no image at"):
        print_predictions(path, [str(tmp_path / "missing.png")])
