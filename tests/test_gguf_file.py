"""course_lib.gguf_file against the ``gguf`` package (llama.cpp's own Python reader), on the real
SmolLM2 file and on small files written here; and what happens with broken files.

Tolerances: none. Dequantized values must be bit-identical to ``gguf.quants.dequantize``, and the
bytes course_lib's quantizers write must equal ``gguf.quants.quantize``'s (which implements Q8_0,
Q4_0 and Q4_1, as well as the F16 cast: all four are compared here).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from course_lib.gguf_file import (
    BLOCK_SIZES,
    DEFAULT_ALIGNMENT,
    GGMLType,
    GGUFError,
    GGUFFile,
    dequantize,
    quantize,
    tensor_nbytes,
)
from course_lib.smollm2 import gguf_path

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def real() -> GGUFFile:
    return GGUFFile(gguf_path())  # the real SmolLM2 file (raises naming the pip command if missing)


@pytest.fixture(scope="module")
def reader(real):
    return gguf.GGUFReader(real.path)  # about 10 s: it parses ~100k vocabulary strings with numpy views


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and float32 bit patterns (so -0.0 != 0.0 and NaN == NaN of the same payload)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ----------------------------------------------------------------------------------------------
# The real file.


def test_real_file_header_and_layout(real, reader):
    assert real.version == 3
    assert len(real.tensors) == len(reader.tensors) == 272
    assert real.alignment == DEFAULT_ALIGNMENT == reader.alignment
    assert real.data_offset == reader.data_offset
    counts = {}
    for t in real.tensors.values():
        counts[t.type.name] = counts.get(t.type.name, 0) + 1
    assert counts == {"Q4_1": 210, "F32": 61, "Q8_0": 1}


def test_real_file_metadata_equals_gguf_reader_for_every_key(real, reader):
    ref = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert set(real.metadata) == set(ref)
    for key, value in ref.items():
        assert real.metadata[key] == value, key
        assert type(real.metadata[key]) is type(value), key
        field = reader.fields[key]
        expected_type = field.types[0].name.lower()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            expected_type = f"array[{field.types[-1].name.lower()}]"
        assert real.metadata_types[key] == expected_type, key
    assert len(real.metadata["tokenizer.ggml.tokens"]) == 49152
    assert real.metadata["llama.rope.freq_base"] == 100000.0


def test_real_file_tensor_infos_equal_gguf_reader(real, reader):
    for t in reader.tensors:
        info = real.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape)), t.name  # numpy order
        assert info.type == GGMLType(int(t.tensor_type)), t.name
        assert (info.offset, info.nbytes) == (t.data_offset, t.n_bytes), t.name
        assert np.array_equal(real.raw(t.name), np.asarray(t.data).reshape(-1).view(np.uint8)), t.name


@pytest.mark.slow
def test_every_real_tensor_dequantizes_bit_identical_to_gguf(real, reader):
    seen = set()
    for t in reader.tensors:
        ours = real.dequantize(t.name)
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        assert ours.dtype == np.float32
        assert same_bits(ours, ref), f"{t.name} ({t.tensor_type.name}) differs from gguf.quants.dequantize"
        seen.add(t.tensor_type.name)
    assert seen == {"F32", "Q4_1", "Q8_0"}


# ----------------------------------------------------------------------------------------------
# Small files written with the gguf package: every value type, every supported tensor type.

EVERY_VALUE = {
    # key: (value, GGUF value type, item type for arrays)
    "t.u8": (200, "UINT8", None),
    "t.i8": (-100, "INT8", None),
    "t.u16": (60000, "UINT16", None),
    "t.i16": (-30000, "INT16", None),
    "t.u32": (4_000_000_000, "UINT32", None),
    "t.i32": (-2_000_000_000, "INT32", None),
    "t.f32": (0.1, "FLOAT32", None),
    "t.bool_true": (True, "BOOL", None),
    "t.bool_false": (False, "BOOL", None),
    "t.str": ("héllo, 世界 🙂", "STRING", None),
    "t.empty_str": ("", "STRING", None),
    "t.u64": (2**63 + 5, "UINT64", None),
    "t.i64": (-(2**62), "INT64", None),
    "t.f64": (1 / 3, "FLOAT64", None),
    "t.arr_u8": ([0, 1, 255], "ARRAY", "UINT8"),
    "t.arr_i8": ([-128, 0, 127], "ARRAY", "INT8"),
    "t.arr_u16": ([1, 65535], "ARRAY", "UINT16"),
    "t.arr_i16": ([-32768, 7], "ARRAY", "INT16"),
    "t.arr_u32": ([1, 2, 3], "ARRAY", "UINT32"),
    "t.arr_i32": ([-1, 5, 2**31 - 1], "ARRAY", "INT32"),
    "t.arr_f32": ([0.5, -1.25, 3.0e38], "ARRAY", "FLOAT32"),
    "t.arr_bool": ([True, False, True], "ARRAY", "BOOL"),
    "t.arr_str": (["a", "", "ü漢字"], "ARRAY", "STRING"),
    "t.arr_u64": ([2**64 - 1, 0], "ARRAY", "UINT64"),
    "t.arr_i64": ([-(2**63), 1], "ARRAY", "INT64"),
    "t.arr_f64": ([1e300, -2.5], "ARRAY", "FLOAT64"),
}


def random_tensors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, Q]]:
    """name -> (stored bytes or float array, type) for every type course_lib dequantizes."""
    x = (rng.standard_normal((6, 64)) * 0.05).astype(np.float32)
    return {
        "f32": (rng.standard_normal((3, 5)).astype(np.float32), Q.F32),
        "f16": (rng.standard_normal((4, 7)).astype(np.float16), Q.F16),
        "q8_0": (gguf.quants.quantize(x, Q.Q8_0), Q.Q8_0),
        "q4_0": (gguf.quants.quantize(x, Q.Q4_0), Q.Q4_0),
        "q4_1": (gguf.quants.quantize(x[:, :32], Q.Q4_1), Q.Q4_1),
        "vec": (rng.standard_normal(96).astype(np.float32), Q.F32),
    }


def write_gguf(path: Path, alignment: int | None = None, tensors=None, extra_kv=True) -> Path:
    w = gguf.GGUFWriter(path, arch="test")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    if extra_kv:
        for key, (value, vtype, sub) in EVERY_VALUE.items():
            w.add_key_value(key, value, gguf.GGUFValueType[vtype], gguf.GGUFValueType[sub] if sub else None)
        w.add_key_value("t.nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.ARRAY)
    for name, (data, qtype) in (tensors or {}).items():
        w.add_tensor(name, data, raw_dtype=qtype if data.dtype == np.uint8 else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("alignment", [None, 64])
def test_every_value_type_and_tensor_type_match_gguf_reader(tmp_path, alignment):
    tensors = random_tensors(np.random.default_rng(0))
    path = write_gguf(tmp_path / "all.gguf", alignment, tensors)
    ours, ref = GGUFFile(path), gguf.GGUFReader(path)
    assert ours.alignment == (alignment or DEFAULT_ALIGNMENT)
    for key, field in ref.fields.items():
        if not key.startswith("GGUF.") and key != "t.nested":
            assert ours.metadata[key] == field.contents(), key
    for key, (value, vtype, sub) in EVERY_VALUE.items():
        if vtype != "FLOAT32" and sub != "FLOAT32":
            assert ours.metadata[key] == value, key  # exact round trip for everything but float32
        assert ours.metadata_types[key] == (f"array[{sub.lower()}]" if sub else vtype.lower())
    assert ours.metadata["t.f32"] == float(np.float32(0.1))
    assert ours.metadata["t.nested"] == [[1, 2], [3]]  # arrays of arrays (the gguf reader cannot show these)
    assert ours.metadata_types["t.nested"] == "array[array]"
    assert ours.data_offset == ref.data_offset and ours.data_offset % ours.alignment == 0
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert info.offset == t.data_offset and info.offset % ours.alignment == 0
        assert same_bits(ours.dequantize(t.name), gguf.quants.dequantize(t.data, t.tensor_type)), t.name
    assert {ours.tensors[n].type.name for n in ours.tensors} == {"F32", "F16", "Q8_0", "Q4_0", "Q4_1"}
    assert np.array_equal(ours.dequantize("f16"), tensors["f16"][0].astype(np.float32))
    assert np.array_equal(ours.dequantize("vec"), tensors["vec"][0])


def test_block_layouts_by_hand():
    """Which nibble holds which value, and where the scales sit, without the gguf package."""
    lo, hi = np.arange(16, dtype=np.uint8), np.arange(15, -1, -1, dtype=np.uint8)
    nibbles = lo | (hi << 4)  # byte j: low nibble j, high nibble 15 - j
    q = np.concatenate([lo, hi]).astype(np.float32)  # value j <- low nibble of byte j, 16 + j <- high
    d, m = np.float16(0.5), np.float16(-3.0)
    q4_0 = np.concatenate([np.frombuffer(d.tobytes(), np.uint8), nibbles])
    assert np.array_equal(dequantize(q4_0, "Q4_0", (32,)), (q - 8) * 0.5)
    q4_1 = np.concatenate([np.frombuffer(d.tobytes() + m.tobytes(), np.uint8), nibbles])
    assert np.array_equal(dequantize(q4_1, "Q4_1", (32,)), q * 0.5 - 3.0)
    ints = np.arange(-16, 16, dtype=np.int8)
    q8_0 = np.concatenate([np.frombuffer(d.tobytes(), np.uint8), ints.view(np.uint8)])
    assert np.array_equal(dequantize(q8_0, GGMLType.Q8_0, (1, 32)), ints[None].astype(np.float32) * 0.5)
    two_rows = np.concatenate([q8_0, q8_0[:2], (2 * ints).view(np.uint8)])  # blocks run along rows
    assert np.array_equal(dequantize(two_rows, 8, (2, 32))[1], 2 * ints.astype(np.float32) * 0.5)


def test_block_sizes_agree_with_gguf():
    for qtype, sizes in BLOCK_SIZES.items():
        assert gguf.GGML_QUANT_SIZES[Q(int(qtype))] == sizes, qtype.name
        assert Q(int(qtype)).name == qtype.name


# ----------------------------------------------------------------------------------------------
# Quantization: course_lib's bytes == gguf's bytes, and either package reads them back the same.


def quantization_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.standard_normal((8, 128)).astype(np.float32)
    special = np.zeros((4, 32), np.float32)
    special[1] = 3.0  # constant block: d = 0 for Q4_1
    special[2, ::2] = 1.0  # ties: |x| / d lands on .5 for Q8_0
    special[2, 1::2] = -0.5
    special[3] = np.linspace(-1, 1, 32)
    halves = (rng.integers(-126, 126, (4, 64)) + 0.5).astype(np.float32)
    halves[:, ::32] = 127.0  # so Q8_0's d is exactly 1 and every x / d is a tie, k + 0.5
    return {
        "normal": x,
        "wide": x * np.logspace(-3, 3, 128, dtype=np.float32),  # scales from 1e-3 to 1e3 along the row
        "halves": halves,
        "special": special,
        "3d": rng.standard_normal((2, 3, 64)).astype(np.float32),
    }


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "F16"])
def test_quantize_equals_gguf_and_round_trips(qtype):
    for case, x in quantization_inputs(np.random.default_rng(1)).items():
        ours = quantize(x, qtype)
        ref = gguf.quants.quantize(x, Q[qtype])  # F16: a float16 array, compared as its bytes
        ref_bytes = ref.view(np.uint8) if qtype == "F16" else ref
        assert ours.dtype == np.uint8 and ours.shape == ref_bytes.shape, case
        assert np.array_equal(ours, ref_bytes), f"{qtype} bytes differ from gguf.quants.quantize on {case}"
        back = dequantize(ours, qtype, x.shape)
        ref_back = ref.astype(np.float32) if qtype == "F16" else gguf.quants.dequantize(ours, Q[qtype])
        assert same_bits(back, ref_back), case
        blocks, restored = x.reshape(-1, 32), back.reshape(-1, 32)
        if qtype == "F16":
            assert np.allclose(back, x, rtol=2**-11, atol=2**-25), case  # half a float16 ulp
            continue
        span = np.ptp(blocks, axis=1) if qtype == "Q4_1" else np.abs(blocks).max(axis=1)
        steps = {"Q8_0": 127, "Q4_0": 8, "Q4_1": 15}[qtype]
        # Half a step d, plus the float16 rounding of the scale (and of Q4_1's minimum) times the
        # largest code; 4e-6 covers float16's subnormal spacing (2^-24) times 127 for tiny scales.
        bound = span / steps * (0.5 + 16 * 2**-11) + np.abs(blocks).max(axis=1) * 2**-10 + 4e-6
        bound = bound * (2.0 if qtype == "Q4_0" else 1.0)  # Q4_0's codes reach -8 d but only +7 d
        assert (np.abs(restored - blocks).max(axis=1) <= bound).all(), f"{qtype} {case} error too large"


def first_rows(f: GGUFFile, name: str, n: int) -> np.ndarray:
    """The first n rows of a tensor, dequantized from the first bytes of its data alone."""
    info = f.tensors[name]
    shape = (min(n, info.shape[0]), *info.shape[1:]) if len(info.shape) > 1 else info.shape
    return dequantize(f.raw(name)[: tensor_nbytes(info.type, shape)], info.type, shape)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_requantizing_real_tensors_equals_gguf(real, qtype):
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"):
        w = first_rows(real, name, 512)
        ours = quantize(w, qtype)
        assert np.array_equal(ours, gguf.quants.quantize(w, Q[qtype])), name
        assert same_bits(dequantize(ours, qtype, w.shape), gguf.quants.dequantize(ours, Q[qtype])), name


@pytest.mark.slow
def test_requantizing_every_real_tensor_gives_back_the_files_bytes(real):
    """Dequantized and quantized again as its own type, every Q4_1 and Q8_0 tensor of the file comes back
    byte for byte: llama.cpp wrote it with the same rules, and a block's extremes sit exactly on its
    levels (so the scale and minimum recomputed from them are the stored ones)."""
    checked = 0
    for name, info in real.tensors.items():
        if info.type in (GGMLType.Q4_1, GGMLType.Q8_0):
            again = quantize(real.dequantize(name), info.type)
            assert np.array_equal(again.reshape(-1), real.raw(name)), name
            checked += 1
    assert checked == 211


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize(np.zeros((2, 40), np.float32), "Q8_0")
    with pytest.raises(ValueError, match="finite"):
        quantize(np.array([[np.nan] * 32], np.float32), "Q4_0")
    with pytest.raises(ValueError, match="float16"):
        quantize(np.full((1, 32), 1e7, np.float32), "Q4_1")
    with pytest.raises(GGUFError, match="Q6_K"):
        quantize(np.zeros((1, 256), np.float32), "Q6_K")
    with pytest.raises(GGUFError, match="unknown tensor type 'Q9_9'"):
        quantize(np.zeros((1, 32), np.float32), "Q9_9")


def test_dequantize_rejects_wrong_sizes():
    raw = quantize(np.ones((2, 32), np.float32), "Q8_0")
    with pytest.raises(GGUFError, match="takes 68 bytes, got 34"):
        dequantize(raw[:1].reshape(-1), "Q8_0", (2, 32))
    with pytest.raises(GGUFError, match="blocks of 32"):
        tensor_nbytes("Q4_0", (3, 48))
    with pytest.raises(GGUFError, match="Q5_0 is not supported"):
        dequantize(np.zeros(22, np.uint8), "Q5_0", (32,))


# ----------------------------------------------------------------------------------------------
# Broken files: a GGUFError naming the file (and the tensor), never a wrong array.


def gguf_bytes(tensors=(("w", (2, 32), 8, 0),), data: bytes | None = None, version: int = 3) -> bytes:
    """A GGUF file assembled by hand: ``tensors`` is (name, numpy shape, type id, data offset)."""

    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), 1)
    out += string("general.architecture") + struct.pack("<I", 8) + string("llama")
    for name, shape, qtype, offset in tensors:
        out += string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape)) + struct.pack("<IQ", qtype, offset)
    out += b"\0" * (-len(out) % 32)
    if data is None:
        data = quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), "Q8_0").tobytes()
    return out + data


def write(tmp_path: Path, content: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_handmade_file_reads_back(tmp_path):
    f = GGUFFile(write(tmp_path, gguf_bytes()))
    assert f.metadata == {"general.architecture": "llama"}
    assert np.allclose(f.dequantize("w").reshape(-1), np.linspace(-1, 1, 64), atol=1 / 127)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"GGML" + gguf_bytes()[4:], "not a GGUF file"),
        (gguf_bytes()[:10], "ends while reading the tensor count"),
        (gguf_bytes(version=1), "version 1 is not supported"),
        (b"GGUF" + struct.pack(">I", 3) + gguf_bytes()[8:], "big-endian"),
        (gguf_bytes()[:40], "ends while reading metadata key #0"),
        (gguf_bytes()[:60], "ends while reading the length of metadata 'general.architecture'"),
        (gguf_bytes()[:85], "ends while reading dimension 0 of tensor 'w'"),
        (gguf_bytes(tensors=(("w", (2, 32), 200, 0),)), "tensor 'w' has tensor type 200"),
        (gguf_bytes(tensors=(("w", (2, 32), 8, 0), ("w", (2, 32), 8, 96))), "'w' appears twice"),
        (gguf_bytes(tensors=(("w", (2, 32), 8, 4),)), "not a multiple of the alignment"),
        (gguf_bytes(tensors=(("w", (2, 40), 8, 0),)), "multiple of 32"),
        (gguf_bytes()[:-1], "data of tensor 'w'.*past the end of the file"),
        (gguf_bytes(tensors=(("w", (2, 32), 8, 1 << 40),)), "data of tensor 'w'.*past the end"),
    ],
)
def test_broken_files_raise_naming_the_file(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(GGUFError, match=message) as e:
        GGUFFile(path)
    assert str(path) in str(e.value)


def test_bad_metadata_values_raise(tmp_path):
    good = gguf_bytes()
    key_end = good.index(b"general.architecture") + len("general.architecture")
    bad_type = good[:key_end] + struct.pack("<I", 13) + good[key_end + 4 :]
    with pytest.raises(GGUFError, match="value type 13"):
        GGUFFile(write(tmp_path, bad_type, "a.gguf"))
    bad_utf8 = good.replace(b"llama", b"ll\xffaa")
    with pytest.raises(GGUFError, match="not valid UTF-8"):
        GGUFFile(write(tmp_path, bad_utf8, "b.gguf"))
    huge = good[:key_end] + struct.pack("<IIQ", 9, 8, 1 << 60) + good[key_end + 4 + 8 + 5 :]
    with pytest.raises(GGUFError, match="claims 1152921504606846976 items"):
        GGUFFile(write(tmp_path, huge, "c.gguf"))


def test_unsupported_tensor_type_opens_but_refuses_to_dequantize(tmp_path):
    content = gguf_bytes(tensors=(("blk.0.q6", (1, 256), int(GGMLType.Q6_K), 0),), data=bytes(210))
    path = write(tmp_path, content)
    f = GGUFFile(path)
    assert f.tensors["blk.0.q6"].type == GGMLType.Q6_K and f.raw("blk.0.q6").size == 210
    with pytest.raises(GGUFError, match="blk.0.q6.*Q6_K is not supported") as e:
        f.dequantize("blk.0.q6")
    assert str(path) in str(e.value)
    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        f.dequantize("nope")


@pytest.mark.parametrize("where", ["header", "metadata", "tensor infos", "tensor data"])
def test_truncated_real_file(tmp_path, real, where):
    cut = {
        "header": 20,
        "metadata": 500_000,  # inside the vocabulary (tokenizer.ggml.tokens)
        "tensor infos": real.data_offset - 3000,
        "tensor data": real.data_offset + 1000,  # the first tensor, token_embd, is 30 MB
    }[where]
    with open(real.path, "rb") as f:
        path = write(tmp_path, f.read(cut))
    expected = {
        "header": "ends while reading the metadata count",
        "metadata": "ends while reading .*item \\d+ of metadata 'tokenizer.ggml.tokens'",
        "tensor infos": "ends while reading .*tensor 'blk",
        "tensor data": "data of tensor 'token_embd.weight'.*past the end",
    }[where]
    with pytest.raises(GGUFError, match=expected) as e:
        GGUFFile(path)
    assert str(path) in str(e.value)
