"""Tokenizers written from scratch: a character tokenizer and a GPT-2 style byte-level BPE.

Both turn text into integer ids and back, save to human-readable JSON and load again.

* :class:`CharTokenizer` gives every character its own id. Characters never seen in training map to
  the ``<unk>`` id, so it works for any language, Chinese included, as long as the training text
  covers the characters you care about.
* :class:`BPETokenizer` works on UTF-8 bytes, so it can encode *any* string with no ``<unk>``:
  text -> pre-tokens (GPT-2's regex) -> UTF-8 bytes -> merges applied by rank -> ids.
  Training counts pre-token frequencies once and then updates pair counts incrementally,
  touching only the words that contain the pair just merged.

The module name shadows Hugging Face's ``tokenizers`` package only for relative imports; this module
does not need that package (the tests use it as the reference).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import regex

# GPT-2's pre-tokenisation pattern: contractions, runs of letters, runs of digits, runs of other symbols
# (each optionally led by one space), and whitespace (trailing whitespace is kept apart from the next word).
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

UNK = "<unk>"
ENDOFTEXT = "<|endoftext|>"
CHAR_FORMAT = "course_lib.char"
BPE_FORMAT = "course_lib.bpe"
FORMAT_VERSION = 1

AllowedSpecial = Literal["all", "none"] | set[str] | frozenset[str]


# ----------------------------------------------------------------------------------------------------------
# helpers shared by both tokenizers


def _write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _read_json(path: str | Path, expected_format: str, cls_name: str) -> dict:
    """Read a tokenizer JSON file and check its ``format`` and ``version`` fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}; save one first with {cls_name}.save(path)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not a valid tokenizer JSON file ({err}); it is corrupt or not a tokenizer: "
            f"delete it (a cached tokenizer is trained again) or re-create it with "
            f"{cls_name}.train(...).save(path)"
        ) from err
    return _check_format(data, path, expected_format, cls_name)


def _check_format(data: object, path: str | Path, expected_format: str, cls_name: str) -> dict:
    """``data`` (a parsed tokenizer file; ``path`` names where it came from) if its format and version fit."""
    if not isinstance(data, dict) or data.get("format") != expected_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} has format {found!r} but {cls_name}.load expects {expected_format!r}; "
            f"use load_tokenizer(path) to pick the class from the file, or save it with {cls_name}.save"
        )
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is version {data.get('version')!r} of {expected_format!r}, this code reads version "
            f"{FORMAT_VERSION}; re-train and save the tokenizer with this version of course_lib"
        )
    return data


def _check_special_tokens(special_tokens: Sequence[str]) -> list[str]:
    special_tokens = list(special_tokens)
    for tok in special_tokens:
        if not isinstance(tok, str) or not tok:
            raise ValueError(f"special tokens must be non-empty strings, got {tok!r}; remove it")
    dupes = sorted({t for t in special_tokens if special_tokens.count(t) > 1})
    if dupes:
        raise ValueError(f"special tokens {dupes} are listed more than once; list each one once")
    return special_tokens


# ----------------------------------------------------------------------------------------------------------
# character tokenizer


class CharTokenizer:
    """One id per character: special tokens first, then the characters in code-point order.

    ``<unk>`` is always a special token, appended to ``special_tokens`` when missing: with the default it
    is id 0, with ``special_tokens=("<pad>",)`` it is id 1.

    ``encode`` maps a character that was not in the training text to the ``<unk>`` id, so
    ``decode(encode(s)) == s`` holds only when every character of ``s`` was seen in training; unseen
    characters come back as the string ``"<unk>"``. Special tokens are not parsed out of text (a
    character tokenizer reads ``"<unk>"`` as five characters); put their ids in with :meth:`token_to_id`.
    """

    def __init__(self, chars: Sequence[str], special_tokens: Sequence[str] = (UNK,)):
        special_tokens = _check_special_tokens(special_tokens)
        if UNK not in special_tokens:
            special_tokens = [*special_tokens, UNK]
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(
                f"chars must be single characters, got {bad[:5]}; pass a list of 1-character strings"
            )
        if len(set(chars)) != len(chars):
            raise ValueError("chars contains duplicates; pass each character once (e.g. sorted(set(text)))")
        self.special_tokens: list[str] = special_tokens
        self.itos: list[str] = [*special_tokens, *chars]
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        self._char_to_id = {c: i for i, c in enumerate(self.itos) if i >= len(special_tokens)}
        self.unk_id: int = self.stoi[UNK]

    @classmethod
    def train(cls, text: str | Iterable[str], special_tokens: Sequence[str] = (UNK,)) -> CharTokenizer:
        """Build the vocabulary from every distinct character of ``text`` (a string or strings)."""
        seen: set[str] = set()
        for chunk in [text] if isinstance(text, str) else text:
            seen.update(chunk)
        return cls(sorted(seen), special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Characters -> ids; an unseen character becomes ``unk_id``."""
        get, unk = self._char_to_id.get, self.unk_id
        return [get(ch, unk) for ch in text]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; special-token ids decode to their names (``"<unk>"``)."""
        itos, n = self.itos, len(self.itos)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(
                    f"id {i} is outside the vocabulary (size {n}); decode only ids this tokenizer made"
                )
            out.append(itos[i])
        return "".join(out)

    def token_to_id(self, token: str) -> int:
        if token not in self.stoi:
            raise KeyError(f"{token!r} is not in the vocabulary; unseen characters encode to {UNK!r}")
        return self.stoi[token]

    def id_to_token(self, i: int) -> str:
        if not 0 <= i < len(self.itos):
            raise KeyError(f"id {i} is outside the vocabulary (size {len(self.itos)})")
        return self.itos[i]

    def to_dict(self) -> dict:
        return {
            "format": CHAR_FORMAT,
            "version": FORMAT_VERSION,
            "special_tokens": self.special_tokens,
            "chars": self.itos[len(self.special_tokens) :],
        }

    def fingerprint(self) -> str:
        """A short hash of the vocabulary; caches of token ids are keyed by it."""
        blob = json.dumps(self.to_dict(), ensure_ascii=True, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (characters readable as themselves)."""
        return _write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls.from_dict(_read_json(path, CHAR_FORMAT, cls.__name__), path)

    @classmethod
    def from_dict(cls, data: dict, path: str | Path = "the tokenizer data") -> CharTokenizer:
        """The tokenizer :meth:`to_dict` described; ``path`` names the source in errors."""
        data = _check_format(data, path, CHAR_FORMAT, cls.__name__)
        try:
            return cls(data["chars"], data["special_tokens"])
        except KeyError as err:
            raise ValueError(
                f"{path} lacks the field {err}; the file is corrupt: re-save the tokenizer"
            ) from err

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"


# ----------------------------------------------------------------------------------------------------------
# byte-level BPE


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, so byte-level tokens can be shown and saved as text.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, ...) are shifted to
    code points 256 and up, e.g. the space byte 32 is shown as ``"Ġ"`` and newline 10 as ``"Ċ"``.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def token_str(token: bytes) -> str:
    """Bytes -> GPT-2's visible form (``b" the"`` -> ``"Ġthe"``)."""
    return "".join(_BYTE_TO_CHAR[b] for b in token)


def token_bytes_from_str(visible: str) -> bytes:
    """GPT-2's visible form -> bytes; the inverse of :func:`token_str`."""
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in visible)
    except KeyError as err:
        raise ValueError(
            f"{visible!r} is not a byte-level token string ({err.args[0]!r} stands for no byte); "
            "tokens are written with GPT-2's byte alphabet, e.g. 'Ġthe' for ' the'"
        ) from None


_CONTROL_CHARS = regex.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` made safe to print: control characters other than tab and newline become U+FFFD.

    Text sampled from a byte-level model can hold control bytes (escape, carriage return, ...) that a
    terminal or a web page would act on rather than show.
    """
    return _CONTROL_CHARS.sub("\ufffd", text)


def _merge_pair(ids: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every adjacent (a, b) in ``ids``, left to right, by ``new``."""
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """GPT-2 style byte-level BPE: ids 0-255 are the bytes, then one id per merge, then the special tokens.

    ``merges`` are byte-string pairs in rank order (lowest rank merges first). A merge whose result already
    exists in the vocabulary reuses that id (as Hugging Face's trainer does), so every id has distinct bytes.
    """

    def __init__(
        self,
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        pattern: str = GPT2_SPLIT_PATTERN,
    ):
        self.pattern = pattern
        self._split = regex.compile(pattern)
        self.vocab: list[bytes] = [bytes([b]) for b in range(256)]  # id -> bytes (regular tokens)
        self._bytes_to_id: dict[bytes, int] = {t: i for i, t in enumerate(self.vocab)}
        self.merges: list[tuple[bytes, bytes]] = []
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}  # (a, b) -> (rank, merged id)
        for rank, (left, right) in enumerate(merges):
            a, b = self._bytes_to_id.get(left), self._bytes_to_id.get(right)
            if a is None or b is None:
                missing = left if a is None else right
                raise ValueError(
                    f"merge #{rank} ({token_str(left)!r}, {token_str(right)!r}) uses {token_str(missing)!r}, "
                    "which no earlier merge creates; merges must be listed in the order they were learned"
                )
            if (a, b) in self._ranks:
                raise ValueError(f"merge #{rank} ({token_str(left)!r}, {token_str(right)!r}) is listed twice")
            joined = left + right
            new = self._bytes_to_id.get(joined)
            if new is None:
                new = len(self.vocab)
                self.vocab.append(joined)
                self._bytes_to_id[joined] = new
            self._ranks[(a, b)] = (rank, new)
            self.merges.append((left, right))
        special_tokens = _check_special_tokens(special_tokens)
        self.special_tokens: dict[str, int] = {s: len(self.vocab) + k for k, s in enumerate(special_tokens)}
        self._special_bytes = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._special_split = self._special_regex(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    # -- vocabulary -----------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def token_bytes(self, i: int) -> bytes:
        """The bytes an id stands for (a special token's UTF-8 bytes for special ids)."""
        if 0 <= i < len(self.vocab):
            return self.vocab[i]
        if i in self._special_bytes:
            return self._special_bytes[i]
        raise KeyError(f"id {i} is outside the vocabulary (size {self.vocab_size})")

    def id_to_token(self, i: int) -> str:
        """An id in GPT-2's visible form (``"Ġthe"`` for ``b" the"``), or the special token's name."""
        if 0 <= i < len(self.vocab):
            return token_str(self.vocab[i])
        for s, j in self.special_tokens.items():
            if j == i:
                return s
        raise KeyError(f"id {i} is outside the vocabulary (size {self.vocab_size})")

    def token_to_id(self, token: str) -> int:
        """A special token's name or a regular token in GPT-2's visible form -> its id."""
        if token in self.special_tokens:
            return self.special_tokens[token]
        try:
            i = self._bytes_to_id.get(token_bytes_from_str(token))
        except ValueError:
            i = None
        if i is None:
            raise KeyError(
                f"{token!r} is not a token; regular tokens are written in GPT-2's byte alphabet "
                f"(' the' is {token_str(b' the')!r}); see id_to_token / get_vocab"
            )
        return i

    def get_vocab(self) -> dict[str, int]:
        """Visible token string -> id, special tokens included (the layout Hugging Face uses)."""
        vocab = {token_str(t): i for i, t in enumerate(self.vocab)}
        vocab.update(self.special_tokens)
        return vocab

    # -- training -------------------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        show_progress: bool = True,
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``texts``.

        Each step merges the most frequent adjacent pair (ties: the pair with the smallest ids).
        Pre-tokens are counted once; after a merge only the words that contain the merged pair are
        rewritten and their pair counts adjusted, which keeps training fast in pure Python.
        Special tokens found in the text are cut out and never take part in merges.
        """
        special_tokens = _check_special_tokens(special_tokens)
        min_size = 256 + len(special_tokens)
        if vocab_size < min_size:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the 256 byte tokens and {len(special_tokens)} "
                f"special token(s) already need {min_size}; choose vocab_size >= {min_size}"
            )
        split = regex.compile(pattern)
        special_split = cls._special_regex({s: 0 for s in special_tokens})

        # 1. count pre-tokens ("words") once
        word_counts: Counter[str] = Counter()
        for text in [texts] if isinstance(texts, str) else texts:
            parts = special_split.split(text)[::2] if special_split else [text]  # odd parts are the specials
            for part in parts:
                word_counts.update(split.findall(part))
        words: list[list[int]] = [list(w.encode("utf-8", "surrogatepass")) for w in word_counts]
        freqs: list[int] = list(word_counts.values())

        # 2. count adjacent pairs and remember which words hold each pair
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        pair_words: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (ids, f) in enumerate(zip(words, freqs)):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] += f
                pair_words[pair].add(w)
        heap = [(-c, pair) for pair, c in pair_counts.items()]  # max-heap via negated counts
        heapq.heapify(heap)

        vocab: list[bytes] = [bytes([b]) for b in range(256)]
        bytes_to_id = {t: i for i, t in enumerate(vocab)}
        merges: list[tuple[bytes, bytes]] = []
        learned: set[tuple[int, int]] = set()
        target = vocab_size - len(special_tokens)
        bar = _progress(total=target - 256, disable=not show_progress)
        while len(vocab) < target:
            # 3. pop the most frequent pair; entries whose count went stale are refreshed or dropped
            best = None
            while heap:
                neg_count, pair = heapq.heappop(heap)
                current = pair_counts.get(pair, 0)
                if current == -neg_count and current > 0:
                    best = pair
                    break
                if 0 < current < -neg_count:  # count fell since this entry was pushed: push the fresh count
                    heapq.heappush(heap, (-current, pair))
            if best is None:
                warnings.warn(
                    f"the training text ran out of pairs to merge at "
                    f"{len(vocab) + len(special_tokens)} tokens "
                    f"(asked for {vocab_size}); use more text or a smaller vocab_size",
                    stacklevel=2,
                )
                break
            a, b = best
            joined = vocab[a] + vocab[b]
            new = bytes_to_id.get(joined)
            if new is None:
                new = len(vocab)
                vocab.append(joined)
                bytes_to_id[joined] = new
                bar.update(1)
            if best not in learned:  # a reused id can bring a learned pair back; its rank already covers it
                learned.add(best)
                merges.append((vocab[a], vocab[b]))

            # 4. rewrite only the words that contain the pair, adjusting pair counts by each word's frequency
            changed: set[tuple[int, int]] = set()
            for w in list(pair_words[best]):
                old, f = words[w], freqs[w]
                merged = _merge_pair(old, a, b, new)
                old_pairs = list(zip(old, old[1:]))
                new_pairs = list(zip(merged, merged[1:]))
                for pair in old_pairs:
                    pair_counts[pair] -= f
                for pair in new_pairs:
                    pair_counts[pair] += f
                    changed.add(pair)
                for pair in set(old_pairs).difference(new_pairs):
                    pair_words[pair].discard(w)
                for pair in set(new_pairs).difference(old_pairs):
                    pair_words[pair].add(w)
                words[w] = merged
            for pair in changed:
                if pair_counts[pair] > 0:
                    heapq.heappush(heap, (-pair_counts[pair], pair))
            del pair_counts[best], pair_words[best]
        bar.close()
        return cls(merges, special_tokens, pattern)

    # -- encoding -------------------------------------------------------------------------------------------

    @staticmethod
    def _special_regex(special_tokens: dict[str, int] | Iterable[str]) -> regex.Pattern | None:
        """A pattern that splits text around special tokens (longest first) and keeps them as parts."""
        names = sorted(special_tokens, key=len, reverse=True)
        if not names:
            return None
        return regex.compile("(" + "|".join(regex.escape(s) for s in names) + ")")

    def _bpe(self, piece: bytes) -> list[int]:
        """Merge the bytes of one pre-token: repeatedly apply the lowest-rank merge present."""
        ids = list(piece)
        ranks = self._ranks
        while len(ids) > 1:
            best, best_rank = None, None
            for pair in zip(ids, ids[1:]):
                hit = ranks.get(pair)
                if hit is not None and (best_rank is None or hit[0] < best_rank):
                    best, best_rank = pair, hit[0]
            if best is None:
                break
            ids = _merge_pair(ids, best[0], best[1], ranks[best][1])
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        """Encode text that holds no special tokens (pre-tokens are cached)."""
        out: list[int] = []
        cache = self._cache
        for word in self._split.findall(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._bpe(word.encode("utf-8", "surrogatepass"))
                if len(cache) >= 500_000:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        return out

    def encode(self, text: str, allowed_special: AllowedSpecial = "all") -> list[int]:
        """Text -> ids. ``allowed_special`` says which special tokens written in the text become their id:
        ``"all"`` (default), ``"none"`` (they are encoded as plain text), or a set of names."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}; use encode_batch for a list")
        if allowed_special == "all":
            allowed = self.special_tokens
        elif allowed_special == "none":
            allowed = {}
        elif isinstance(allowed_special, set | frozenset):
            unknown = sorted(set(allowed_special) - set(self.special_tokens))
            if unknown:
                raise ValueError(
                    f"allowed_special names {unknown}, which are not special tokens of this tokenizer "
                    f"({sorted(self.special_tokens)}); pass a subset of them, 'all' or 'none'"
                )
            allowed = {s: self.special_tokens[s] for s in allowed_special}
        else:
            raise ValueError(
                f"allowed_special must be 'all', 'none' or a set of names, got {allowed_special!r}"
            )
        if not allowed:
            return self._encode_ordinary(text)
        splitter = self._special_split if allowed is self.special_tokens else self._special_regex(allowed)
        out: list[int] = []
        for k, part in enumerate(splitter.split(text)):
            if k % 2:  # odd parts are the captured special tokens
                out.append(allowed[part])
            elif part:
                out.extend(self._encode_ordinary(part))
        return out

    def encode_batch(self, texts: Iterable[str], allowed_special: AllowedSpecial = "all") -> list[list[int]]:
        return [self.encode(t, allowed_special) for t in texts]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        vocab, n = self.vocab, len(self.vocab)
        parts = []
        for i in ids:
            i = int(i)
            if 0 <= i < n:
                parts.append(vocab[i])
            elif i in self._special_bytes:
                parts.append(self._special_bytes[i])
            else:
                raise ValueError(
                    f"id {i} is outside the vocabulary (size {self.vocab_size}); "
                    "decode only ids this tokenizer made"
                )
        return b"".join(parts)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. The output of :meth:`encode` always decodes exactly; an arbitrary id sequence can cut
        a character's UTF-8 bytes apart, and such fragments become U+FFFD (``errors="replace"``)."""
        data = self.decode_bytes(ids)
        try:
            return data.decode(
                "utf-8", "surrogatepass"
            )  # surrogatepass: lone surrogates in str round-trip too
        except UnicodeDecodeError:
            return data.decode("utf-8", "replace")

    # -- saving ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": BPE_FORMAT,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "merges": [[token_str(a), token_str(b)] for a, b in self.merges],
        }

    def fingerprint(self) -> str:
        """A short hash of pattern, merges and special tokens; caches of token ids are keyed by it."""
        blob = json.dumps(self.to_dict(), ensure_ascii=True, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write JSON: the pattern, the special tokens and one merge per line in GPT-2's visible form."""
        d = self.to_dict()
        head = {k: v for k, v in d.items() if k != "merges"}
        lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
        merges = ",\n".join(f"    {json.dumps(m, ensure_ascii=False)}" for m in d["merges"])
        text = "{\n" + "\n".join(lines) + '\n  "merges": [\n' + merges + "\n  ]\n}\n"
        return _write_text_atomic(path, text)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        return cls.from_dict(_read_json(path, BPE_FORMAT, cls.__name__), path)

    @classmethod
    def from_dict(cls, data: dict, path: str | Path = "the tokenizer data") -> BPETokenizer:
        """The tokenizer :meth:`to_dict` described; ``path`` names the source in errors."""
        data = _check_format(data, path, BPE_FORMAT, cls.__name__)
        try:
            merges = [(token_bytes_from_str(a), token_bytes_from_str(b)) for a, b in data["merges"]]
            specials = data["special_tokens"]
            pattern = data["pattern"]
            regex.compile(pattern)
        except (KeyError, TypeError, ValueError, regex.error) as err:
            raise ValueError(
                f"{path} is a corrupt BPE file ({type(err).__name__}: {err}); re-create it with "
                "BPETokenizer.train(...).save(path)"
            ) from err
        names = sorted(specials, key=specials.get) if isinstance(specials, dict) else list(specials)
        tok = cls(merges, names, pattern)
        if isinstance(specials, dict) and tok.special_tokens != specials:
            raise ValueError(
                f"{path} lists special token ids {specials} but its merges give {tok.special_tokens}; "
                "the file was edited by hand or is corrupt: re-save it with BPETokenizer.save"
            )
        return tok

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )


def load_tokenizer(path: str | Path) -> CharTokenizer | BPETokenizer:
    """Load a tokenizer saved by either class, choosing the class from the file's ``format`` field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable tokenizer JSON file ({err}); it is corrupt or cut short: delete it "
            "(a cached tokenizer is trained again on the next run) or re-save the tokenizer"
        ) from err
    return tokenizer_from_dict(data, path)


def tokenizer_from_dict(
    data: object, path: str | Path = "the tokenizer data"
) -> CharTokenizer | BPETokenizer:
    """The tokenizer a parsed JSON file (``to_dict()``) describes, its class chosen by ``format``."""
    classes = {CHAR_FORMAT: CharTokenizer, BPE_FORMAT: BPETokenizer}
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt not in classes:
        raise ValueError(f"{path} has unknown format {fmt!r}; expected one of {sorted(classes)}")
    return classes[fmt].from_dict(data, path)


def tokenizer_from_meta(meta: dict) -> CharTokenizer | BPETokenizer:
    """The tokenizer a checkpoint was trained with, rebuilt from the copy stored inside it.

    ``meta["tokenizer_json"]`` is that copy (the file at ``meta["tokenizer_path"]`` may have been
    retrained or replaced since, so it is not read); ``meta["tokenizer_fingerprint"]``, when present,
    must match the rebuilt tokenizer's :meth:`~BPETokenizer.fingerprint`.
    """
    source = "the checkpoint's tokenizer copy (meta['tokenizer_json'])"
    text = meta.get("tokenizer_json")
    if not isinstance(text, str) or not text:
        raise ValueError(
            "the checkpoint holds no copy of its tokenizer (meta['tokenizer_json']); use a checkpoint "
            "written by `python -m course_lib pretrain` or finetune"
        )
    try:
        tok = tokenizer_from_dict(json.loads(text), source)
    except ValueError as err:
        raise ValueError(f"{source} is unusable ({err}); the checkpoint is damaged: use another one") from err
    expected = meta.get("tokenizer_fingerprint")
    if expected is not None and tok.fingerprint() != expected:
        raise ValueError(
            f"{source} has fingerprint {tok.fingerprint()} but the checkpoint was trained with {expected}; "
            "decoding with it would print wrong text. The checkpoint is damaged: use another one"
        )
    return tok


def tokenizer_meta(tok: CharTokenizer | BPETokenizer, path: str | Path) -> dict[str, str]:
    """What a checkpoint stores about its tokenizer: the file it came from, a copy, the fingerprint."""
    return {
        "tokenizer_path": str(path),
        "tokenizer_json": json.dumps(tok.to_dict(), ensure_ascii=False),
        "tokenizer_fingerprint": tok.fingerprint(),
    }


def cached_tokenizer(
    name: str, kind: str, vocab_size: int, texts: Callable[[], Sequence[str]], show_progress: bool = False
) -> tuple[CharTokenizer | BPETokenizer, Path]:
    """A tokenizer trained once and kept as ``<cache>/tokenizers/<name>.json``; later calls (and other
    ranks of a distributed run) load it. ``kind`` is ``"bpe"`` (``vocab_size`` ids) or ``"char"``;
    ``texts`` is only called on a cache miss."""
    from course_lib.env import cache_dir

    if kind not in ("bpe", "char"):
        raise ValueError(f"tokenizer kind must be 'bpe' or 'char', got {kind!r}")
    path = cache_dir("tokenizers") / f"{name}.json"
    if path.is_file():
        return load_tokenizer(path), path
    if kind == "char":
        tok: CharTokenizer | BPETokenizer = CharTokenizer.train(texts())
    else:
        tok = BPETokenizer.train(texts(), vocab_size, show_progress=show_progress)
    tok.save(path)
    return tok, path


def _progress(total: int, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="BPE merges", unit="merge", disable=disable, mininterval=0.5)
