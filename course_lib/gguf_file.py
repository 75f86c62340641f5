"""Read GGUF files (llama.cpp's model format) and (de)quantize their tensors, written out in numpy.

A GGUF file is, in order (every number little-endian):

    header         b"GGUF", version (uint32, 2 or 3), tensor count (uint64), metadata count (uint64)
    metadata       key -> typed value; a key or string is a uint64 byte length + that many UTF-8 bytes
    tensor infos   name, n_dims (uint32), dims (uint64 each, fastest-varying first), type (uint32),
                   offset (uint64, from the start of the data section)
    padding        up to a multiple of ``general.alignment`` (default 32)
    data           the tensors' bytes, each tensor starting at a multiple of the alignment

The data section is memory-mapped, so opening a file reads only its header; a tensor's bytes are
read when it is dequantized. Quantized types store blocks of 32 consecutive values of a row with
a float16 scale each (see :func:`dequantize`); :func:`quantize` writes those blocks, bit for bit as
llama.cpp's reference quantizers do.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32


class GGUFError(ValueError):
    """A file that is not a valid GGUF file, or a tensor this module cannot turn into numbers.
    The message names the file (and the tensor or metadata key) and what to do."""


class ValueType(IntEnum):
    """The type tags of GGUF metadata values."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# The fixed-size value types as numpy dtypes (little-endian).
_SCALAR_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("?"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}


class GGMLType(IntEnum):
    """Tensor element types (ggml's numbering). Only some can be dequantized here; the others are
    listed so that a file holding them still opens and says which type it cannot read."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    BF16 = 30


# (values per block, bytes per block) of each type: a row of n values takes n / block * bytes bytes.
BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q8_1: (32, 40),
    GGMLType.Q2_K: (256, 84),
    GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176),
    GGMLType.Q6_K: (256, 210),
    GGMLType.Q8_K: (256, 292),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.BF16: (1, 2),
}

# The block layouts, as numpy structured dtypes: one record per block of QK values.
QK = 32
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])  # 2 + 32 = 34 bytes
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 2 + 16 = 18 bytes
Q4_1_BLOCK = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (QK // 2,))])  # 2 + 2 + 16 = 20 bytes


def as_ggml_type(qtype: GGMLType | int | str) -> GGMLType:
    """GGMLType from a member, its number or its name ("Q4_1")."""
    try:
        return GGMLType[qtype.upper()] if isinstance(qtype, str) else GGMLType(int(qtype))
    except (KeyError, ValueError):
        raise GGUFError(
            f"unknown tensor type {qtype!r}; known types are {[t.name for t in GGMLType]}"
        ) from None


def tensor_nbytes(qtype: GGMLType | int | str, shape: tuple[int, ...]) -> int:
    """Bytes taken by a tensor of numpy ``shape`` (rows ..., row length) stored as ``qtype``."""
    qtype = as_ggml_type(qtype)
    block, nbytes = BLOCK_SIZES[qtype]
    row = shape[-1] if shape else 1
    if row % block:
        raise GGUFError(
            f"a {qtype.name} tensor stores its rows in blocks of {block} values, but shape {tuple(shape)} "
            f"has rows of {row}; use a row length that is a multiple of {block}"
        )
    return math.prod(shape) // block * nbytes


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in the file."""

    name: str
    shape: tuple[int, ...]  # numpy order (rows, ..., row length): the GGUF dims reversed
    type: GGMLType
    offset: int  # absolute byte offset of the tensor's data in the file
    nbytes: int  # bytes of data

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


# ----------------------------------------------------------------------------------------------
# Reading the header.


class _Cursor:
    """Reads little-endian values from a buffer, raising a GGUFError that says what was being read
    when the buffer ends first (a truncated file)."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.path, self.pos = buf, path, 0

    def fail(self, message: str) -> GGUFError:
        return GGUFError(f"{self.path}: {message}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(
                f"the file ends while reading {what} (needs {n} bytes at offset {self.pos}, the file has "
                f"{len(self.buf)}); it is truncated or not a GGUF file: download or copy it again"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, vtype: ValueType, what: str) -> Any:
        dtype = _SCALAR_DTYPES[vtype]
        return np.frombuffer(self.take(dtype.itemsize, what), dtype)[0].item()

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        raw = self.take(n, what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8 ({e}); the file is damaged") from None

    def value_type(self, what: str) -> ValueType:
        tag = self.u32(f"the type of {what}")
        try:
            return ValueType(tag)
        except ValueError:
            raise self.fail(
                f"{what} has value type {tag}, which GGUF does not define (0..12); the file is damaged"
            ) from None

    def value(self, vtype: ValueType, what: str) -> Any:
        """One metadata value: a Python int/float/bool/str, or a list for an array."""
        if vtype == ValueType.STRING:
            return self.string(what)
        if vtype != ValueType.ARRAY:
            return self.scalar(vtype, what)
        item_type = self.value_type(f"the items of {what}")
        count = self.u64(f"the length of {what}")
        if item_type in _SCALAR_DTYPES:  # fixed size: read all items at once
            dtype = _SCALAR_DTYPES[item_type]
            raw = self.take(count * dtype.itemsize, f"the {count} items of {what}")
            return np.frombuffer(raw, dtype).tolist()
        smallest = 8 if item_type == ValueType.STRING else 12  # a length / an item type + a count
        if count * smallest > len(self.buf) - self.pos:
            raise self.fail(
                f"{what} claims {count} items, more than the rest of the file can hold; the file is "
                "truncated or damaged: download or copy it again"
            )
        return [self.value(item_type, f"item {i} of {what}") for i in range(count)]


def _align(offset: int, alignment: int) -> int:
    return offset + (-offset) % alignment


# ----------------------------------------------------------------------------------------------
# The file.


class GGUFFile:
    """A GGUF file opened for reading: ``metadata``, ``tensors`` and each tensor's data.

    >>> f = GGUFFile("model.gguf")                       # doctest: +SKIP
    >>> f.metadata["llama.block_count"], f.tensors["token_embd.weight"].shape   # doctest: +SKIP
    (30, (49152, 576))
    >>> f.dequantize("blk.0.attn_q.weight")             # float32 (576, 576)     # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFError(f"{self.path}: no such GGUF file; check the path")
        if self.path.stat().st_size == 0:
            raise GGUFError(f"{self.path}: the file is empty; download or copy it again")
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")  # the whole file, read lazily
        cur = _Cursor(memoryview(self._data), self.path)

        magic = bytes(cur.take(4, "the magic number"))
        if magic != GGUF_MAGIC:
            raise cur.fail(f"not a GGUF file: it starts with {magic!r}, a GGUF file with {GGUF_MAGIC!r}")
        self.version = cur.u32("the version")
        if self.version not in SUPPORTED_VERSIONS:
            hint = " (a big-endian file?)" if self.version > 0xFFFF else ""
            raise cur.fail(
                f"GGUF version {self.version}{hint} is not supported (only {SUPPORTED_VERSIONS}); "
                "convert the model again with a current llama.cpp"
            )
        n_tensors = cur.u64("the tensor count")
        n_kv = cur.u64("the metadata count")

        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, str] = {}  # key -> "uint32", "string", "array[string]", ...
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.value_type(f"metadata {key!r}")
            start = cur.pos
            self.metadata[key] = cur.value(vtype, f"metadata {key!r}")
            self.metadata_types[key] = _type_name(vtype, cur.buf, start)

        self.alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(self.alignment, int) or self.alignment <= 0 or self.alignment % 8:
            raise cur.fail(f"general.alignment={self.alignment!r} must be a positive multiple of 8")

        infos = [self._read_tensor_info(cur, i) for i in range(n_tensors)]
        self.data_offset = _align(cur.pos, self.alignment)  # the data section starts here
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, qtype, rel in infos:
            self.tensors[name] = self._place(name, shape, qtype, rel)

    def _read_tensor_info(self, cur: _Cursor, i: int) -> tuple[str, tuple[int, ...], GGMLType, int]:
        name = cur.string(f"the name of tensor #{i}")
        what = f"tensor {name!r}"
        n_dims = cur.u32(f"the dimension count of {what}")
        if n_dims > 4:
            raise cur.fail(f"{what} claims {n_dims} dimensions (GGUF allows at most 4); the file is damaged")
        dims = [cur.u64(f"dimension {d} of {what}") for d in range(n_dims)]
        tag = cur.u32(f"the type of {what}")
        if tag not in GGMLType._value2member_map_:
            raise cur.fail(
                f"{what} has tensor type {tag}, unknown to course_lib; known types are "
                f"{[t.name for t in GGMLType]} (only F32, F16, Q8_0, Q4_0 and Q4_1 are dequantized)"
            )
        offset = cur.u64(f"the data offset of {what}")
        return name, tuple(reversed(dims)), GGMLType(tag), offset

    def _place(self, name: str, shape: tuple[int, ...], qtype: GGMLType, rel: int) -> TensorInfo:
        """Check that a tensor's data lies inside the file and make its TensorInfo."""
        if name in self.tensors:
            raise GGUFError(
                f"{self.path}: tensor {name!r} appears twice in the tensor list; the file is damaged"
            )
        try:
            nbytes = tensor_nbytes(qtype, shape)
        except GGUFError as e:
            raise GGUFError(f"{self.path}: tensor {name!r}: {e}") from None
        if rel % self.alignment:
            raise GGUFError(
                f"{self.path}: tensor {name!r} starts at data offset {rel}, not a multiple of the "
                f"alignment {self.alignment}; the file is damaged"
            )
        start = self.data_offset + rel
        if start + nbytes > self._data.size:
            raise GGUFError(
                f"{self.path}: the data of tensor {name!r} ({qtype.name}, shape {shape}) runs from byte "
                f"{start} to {start + nbytes}, past the end of the file ({self._data.size} bytes); the file "
                "is truncated: download or copy it again"
            )
        return TensorInfo(name, shape, qtype, start, nbytes)

    # ------------------------------------------------------------------------------ tensors

    def info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            close = [n for n in self.tensors if n.split(".")[-2:] == name.split(".")[-2:]][:3]
            hint = f" (similar: {close})" if close else ""
            raise KeyError(f"{self.path}: no tensor named {name!r}{hint}; the file has {len(self.tensors)}")
        return self.tensors[name]

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor ``name``, uint8 (nbytes,), a read-only view of the mapped file."""
        t = self.info(name)
        return np.asarray(self._data[t.offset : t.offset + t.nbytes])

    def dequantize(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a float32 numpy array of its numpy shape (a new array)."""
        t = self.info(name)
        try:
            return dequantize(self.raw(name), t.type, t.shape)
        except GGUFError as e:
            raise GGUFError(f"{self.path}: tensor {name!r}: {e}") from None

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, version={self.version}, {len(self.metadata)} metadata keys, "
            f"{len(self.tensors)} tensors)"
        )


def _type_name(vtype: ValueType, buf: memoryview, start: int) -> str:
    """'uint32', 'string', 'array[string]': the type of a value that starts at ``start``."""
    if vtype != ValueType.ARRAY:
        return vtype.name.lower()
    item = ValueType(struct.unpack_from("<I", buf, start)[0])  # already checked by the cursor
    return f"array[{item.name.lower()}]"


# ----------------------------------------------------------------------------------------------
# Dequantization: stored bytes -> float32.


def _blocks(raw: np.ndarray, layout: np.dtype) -> np.ndarray:
    """View raw bytes as an array of block records (no copy)."""
    return np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1).view(layout)  # (n_blocks,)


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) bytes -> (n, 32) 4-bit values: value j is the LOW nibble of byte j, value j + 16 the HIGH
    nibble of byte j (the first half of the block in the low nibbles, the second half in the high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) values in 0..15 -> (n, 16) bytes, the layout :func:`_unpack_nibbles` reads."""
    return q[:, : QK // 2] | (q[:, QK // 2 :] << 4)


def dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q8_0: blocks of 32 values, each block = float16 scale d + 32 int8 q; value = q * d.
    Returns float32 (n_blocks, 32)."""
    b = _blocks(raw, Q8_0_BLOCK)
    d = b["d"].astype(np.float32)[:, None]  # (n, 1)
    return b["qs"].astype(np.float32) * d  # (n, 32)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0: blocks of 32 values, each block = float16 scale d + 16 bytes holding 32 4-bit q (see
    :func:`_unpack_nibbles`); value = (q - 8) * d, so q in 0..15 covers -8 d .. 7 d. Returns (n, 32)."""
    b = _blocks(raw, Q4_0_BLOCK)
    d = b["d"].astype(np.float32)[:, None]  # (n, 1)
    q = _unpack_nibbles(b["qs"]).astype(np.int8) - 8  # (n, 32) in -8 .. 7
    return q.astype(np.float32) * d


def dequantize_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_1: blocks of 32 values, each block = float16 scale d + float16 minimum m + 16 bytes of 32 4-bit q
    (see :func:`_unpack_nibbles`); value = q * d + m, so q in 0..15 covers m .. m + 15 d. Returns (n, 32)."""
    b = _blocks(raw, Q4_1_BLOCK)
    d = b["d"].astype(np.float32)[:, None]  # (n, 1)
    m = b["m"].astype(np.float32)[:, None]  # (n, 1)
    return _unpack_nibbles(b["qs"]).astype(np.float32) * d + m  # (n, 32)


_DEQUANTIZERS = {
    GGMLType.F32: lambda raw: _blocks(raw, np.dtype("<f4")).astype(np.float32),
    GGMLType.F16: lambda raw: _blocks(raw, np.dtype("<f2")).astype(np.float32),
    GGMLType.Q8_0: dequantize_q8_0,
    GGMLType.Q4_0: dequantize_q4_0,
    GGMLType.Q4_1: dequantize_q4_1,
}
SUPPORTED_TYPES = tuple(_DEQUANTIZERS)


def _check_supported(qtype: GGMLType) -> None:
    if qtype not in _DEQUANTIZERS:
        raise GGUFError(
            f"tensor type {qtype.name} is not supported by course_lib (supported: "
            f"{[t.name for t in SUPPORTED_TYPES]}); use a GGUF file quantized as Q8_0, Q4_0 or Q4_1"
        )


def dequantize(raw: np.ndarray, qtype: GGMLType | int | str, shape: tuple[int, ...]) -> np.ndarray:
    """The stored bytes ``raw`` of a tensor of type ``qtype`` -> float32 array of numpy ``shape``.

    Blocks run along the rows (the last axis): a row of n values is n / 32 consecutive blocks.
    """
    qtype = as_ggml_type(qtype)
    _check_supported(qtype)
    shape = tuple(int(s) for s in shape)
    expected = tensor_nbytes(qtype, shape)
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.size != expected:
        raise GGUFError(
            f"{qtype.name} data of shape {shape} takes {expected} bytes, got {raw.size} of dtype "
            f"{raw.dtype}; pass the tensor's raw uint8 bytes (GGUFFile.raw) with its own shape and type"
        )
    return _DEQUANTIZERS[qtype](raw).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Quantization: float32 -> stored bytes (the rules of llama.cpp's reference quantizers).


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: to the nearest integer, halves away from zero (np.round sends halves to even)."""
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), np.float32(0))


def _inverse(d: np.ndarray) -> np.ndarray:
    """1 / d, with 0 where d == 0 (an all-zero block quantizes to zeros)."""
    return np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)


def _as_float16(d: np.ndarray, what: str) -> np.ndarray:
    """float32 -> float16, refusing values float16 cannot hold."""
    with np.errstate(over="ignore"):
        d16 = d.astype(np.float16)
    if not np.isfinite(d16).all():
        raise ValueError(f"{what} too large for float16 (max 65504); scale the tensor down before quantizing")
    return d16


def quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """(n, 32) float32 -> (n,) Q8_0 records: d = max|x| / 127, q = round(x / d) in -127 .. 127."""
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127  # (n, 1)
    out = np.empty(len(blocks), Q8_0_BLOCK)
    out["qs"] = _round_half_away(blocks * _inverse(d)).astype(np.int8)
    out["d"] = _as_float16(d[:, 0], "a block scale is")
    return out


def quantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """(n, 32) float32 -> (n,) Q4_0 records: d = -(the value of largest magnitude) / 8, so that value
    maps to q = 0 exactly; q = trunc(x / d + 8.5) clipped to 0 .. 15 (rounds x / d to nearest)."""
    i = np.abs(blocks).argmax(axis=1)[:, None]  # (n, 1) the first value of largest magnitude
    d = np.take_along_axis(blocks, i, axis=1) / -8  # (n, 1), signed
    q = np.clip(np.trunc(blocks * _inverse(d) + np.float32(8.5)), 0, 15).astype(np.uint8)  # (n, 32)
    out = np.empty(len(blocks), Q4_0_BLOCK)
    out["d"] = _as_float16(d[:, 0], "a block scale is")
    out["qs"] = _pack_nibbles(q)
    return out


def quantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """(n, 32) float32 -> (n,) Q4_1 records: m = min, d = (max - min) / 15, q = trunc((x - m) / d + 0.5)
    clipped to 0 .. 15. (q is computed from the float32 m; the block stores m rounded to float16.)"""
    lo = blocks.min(axis=1, keepdims=True)  # (n, 1)
    d = (blocks.max(axis=1, keepdims=True) - lo) / 15  # (n, 1)
    q = np.clip(np.trunc((blocks - lo) * _inverse(d) + np.float32(0.5)), 0, 15).astype(np.uint8)
    out = np.empty(len(blocks), Q4_1_BLOCK)
    out["d"] = _as_float16(d[:, 0], "a block scale is")
    out["m"] = _as_float16(lo[:, 0], "a block minimum is")
    out["qs"] = _pack_nibbles(q)
    return out


_QUANTIZERS = {GGMLType.Q8_0: quantize_q8_0, GGMLType.Q4_0: quantize_q4_0, GGMLType.Q4_1: quantize_q4_1}


def quantize(x: np.ndarray, qtype: GGMLType | int | str) -> np.ndarray:
    """A float array (..., n) -> its stored bytes as ``qtype``, uint8 (..., n / 32 * block bytes).

    Q8_0, Q4_0 and Q4_1 follow llama.cpp's reference rules (so the bytes equal the ``gguf`` package's
    quantize); F32 and F16 are plain casts. ``dequantize(quantize(x, t), t, x.shape)`` is x rounded.
    """
    qtype = as_ggml_type(qtype)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or not np.isfinite(x).all():
        raise ValueError("quantize needs an array of at least one dimension with only finite values")
    if qtype == GGMLType.F32:
        return np.ascontiguousarray(x).view(np.uint8)
    if qtype == GGMLType.F16:
        return _as_float16(x, "a value is").view(np.uint8)
    if qtype not in _QUANTIZERS:
        raise GGUFError(
            f"course_lib quantizes to F32, F16, {', '.join(t.name for t in _QUANTIZERS)}, not {qtype.name}"
        )
    if x.shape[-1] % QK:
        raise ValueError(
            f"{qtype.name} quantizes blocks of {QK} values along the last axis, but it has {x.shape[-1]}; "
            f"pad or reshape the array so the last axis is a multiple of {QK}"
        )
    records = _QUANTIZERS[qtype](x.reshape(-1, QK))  # (n_blocks,)
    return records.view(np.uint8).reshape(*x.shape[:-1], -1)
