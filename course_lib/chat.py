"""Chat with a language model: a chat template, KV-cache generation that streams text, stop tokens.

A :class:`ChatModel` joins three things: a course_lib :class:`~course_lib.gpt.GPT`, its tokenizer (a
:class:`~course_lib.tokenizers.BPETokenizer` whose special tokens include ChatML's ``<|im_start|>`` and
``<|im_end|>``) and a chat template that turns a list of messages into one prompt string:

    messages -> template -> prompt text -> token ids -> GPT.generate_steps (KV cache) -> ids -> text

    chat = load_chat_model("smollm2")
    print(chat.chat([{"role": "user", "content": "What is 2 + 2?"}], temperature=0))
    for piece in chat.stream([{"role": "user", "content": "Tell me a story."}]):
        print(piece, end="", flush=True)

Generation stops at ``<|im_end|>`` (the end of the assistant's turn), at ``<|endoftext|>``, at any other
stop string, after ``max_new_tokens`` tokens, or when the context is full. A conversation too long for
the context loses its oldest turns (the system message and the last message stay), with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from course_lib.chat_template import IM_END, IM_START, check_messages, render_chat
from course_lib.tokenizers import ENDOFTEXT as EOS
from course_lib.tokenizers import StreamDecoder, printable

DEFAULT_STOP = (IM_END,)

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": text}


PLAIN_CHATML = functools.partial(render_chat, system_prompt=None)  # ChatML, no default system message


class PromptTooLongError(ValueError):
    """Even the last message (with the system message) does not fit the model's context."""


# ----------------------------------------------------------------------------------------------------
# Stop strings that may arrive split across streamed pieces.


class StopStrings:
    """Cuts streamed text at the first stop string, holding back text that might begin one.

    ``push(piece)`` returns the text that is certainly not part of a stop string and whether a stop
    string was found (the text before it is returned, the stop string and anything after are not).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self._held = ""

    def push(self, piece: str) -> tuple[str, bool]:
        text = self._held + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        keep = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back text, once no more text will come."""
        text, self._held = self._held, ""
        return text


# ----------------------------------------------------------------------------------------------------
# The chat model.


class ChatModel:
    """A GPT, its tokenizer and a chat template, answering lists of messages.

    ``name`` is what the server reports as the model id. The model is used as it is (device, dtype);
    the methods are not thread-safe: callers that share one ChatModel serialise their calls.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        template: Callable[..., str] = PLAIN_CHATML,
        name: str = "chat",
    ) -> None:
        if not isinstance(getattr(tokenizer, "special_tokens", None), dict):
            raise ValueError(
                f"{type(tokenizer).__name__} has no special_tokens dict; a chat model needs a BPETokenizer "
                f"with the chat template's special tokens ({IM_START}, {IM_END}, {EOS})"
            )
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}; "
                "load the tokenizer that belongs to these weights"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.name = name

    @property
    def block_size(self) -> int:
        """The context length: prompt plus answer must fit in it."""
        return self.model.config.block_size

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    def make_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.tokenizer)

    def encode_prompt(self, messages: Sequence[Message], max_new_tokens: int) -> list[int]:
        """The prompt's token ids, the oldest turns dropped (with a warning) when the context is short.

        Turns are dropped, oldest first, until the prompt leaves room for the answer (max_new_tokens,
        but at most half the context); the system message and the last message are always kept. When
        even those two fill the whole context, :class:`PromptTooLongError` says so.
        """
        messages = check_messages(messages)
        system = messages[:1] if messages[0]["role"] == "system" else []
        turns = messages[len(system) :]

        def encode(dropped: int) -> list[int]:
            return self.tokenizer.encode(self.template(system + turns[dropped:]))

        block = self.block_size
        limit = block - min(max_new_tokens, block // 2)  # the longest prompt that leaves room to answer
        ids = encode(0)
        full, dropped = len(ids), 0
        if len(ids) > limit and len(turns) > 1:
            lo, hi = 1, len(turns) - 1  # binary search: fewest dropped turns that fit (lengths shrink)
            while lo < hi:
                mid = (lo + hi) // 2
                if len(encode(mid)) <= limit:
                    hi = mid
                else:
                    lo = mid + 1
            dropped, ids = lo, encode(lo)
        if len(ids) >= block:
            raise PromptTooLongError(
                f"the prompt (the last message{', with the system message,' if system else ''} in the chat "
                f"template) takes {len(ids)} tokens, but the model's context holds {block}: shorten it"
            )
        if dropped:
            warnings.warn(
                f"the conversation ({full} tokens) leaves too little room to answer in the context of "
                f"{block} tokens: dropped its {dropped} oldest message(s), {len(ids)} prompt tokens remain",
                stacklevel=3,
            )
        return ids

    def stream(
        self,
        messages: Sequence[Message],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = DEFAULT_STOP,
        repetition_penalty: float = 1.0,
    ) -> ChatStream:
        """The answer to ``messages`` as text pieces, yielded as the tokens are sampled.

        ``temperature=0`` is greedy; ``seed`` makes sampling reproducible (None: the global RNG).
        ``stop``: special-token names (e.g. ``<|im_end|>``) stop on that token; other strings stop when
        the text contains them (the stop string is not returned). ``<|endoftext|>`` always stops.
        ``repetition_penalty`` > 1 makes tokens already in the prompt or the answer less likely.
        The prompt is encoded (and checked) at once; the tokens come as the stream is read.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
        if not repetition_penalty > 0:
            raise ValueError(f"repetition_penalty={repetition_penalty!r} must be > 0 (1 turns it off)")
        if isinstance(stop, str):
            stop = [stop]
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError(f"stop strings must be non-empty strings, got {list(stop)!r}")
        prompt = self.encode_prompt(messages, max_new_tokens)
        specials = self.tokenizer.special_tokens
        stop_ids = {specials[s] for s in (*stop, EOS) if s in specials}
        stop_texts = [s for s in stop if s not in specials]
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        steps = self.model.generate_steps(
            torch.tensor([prompt], dtype=torch.long, device=self.device),  # (1, T)
            min(max_new_tokens, self.block_size - len(prompt)),  # the answer never slides out the prompt
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            repetition_penalty=repetition_penalty,
        )
        return ChatStream(steps, len(prompt), self.make_decoder(), stop_ids, StopStrings(stop_texts))

    def chat(
        self,
        messages: Sequence[Message],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = DEFAULT_STOP,
        repetition_penalty: float = 1.0,
    ) -> str:
        """The whole answer to ``messages`` (the pieces of :meth:`stream`, joined)."""
        pieces = self.stream(
            messages, max_new_tokens, temperature, top_k, top_p, seed, stop, repetition_penalty
        )
        return "".join(pieces)

    @torch.no_grad()
    def sample(
        self,
        messages: Sequence[Message],
        n: int,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """``n`` answers to one conversation, sampled as one batch of n rows (e.g. to rank them and
        build preference pairs). Each stops at ``<|im_end|>`` or ``<|endoftext|>``; ``temperature=0``
        gives n copies of :meth:`chat`'s greedy answer."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive integer: the number of answers to sample")
        prompt = self.encode_prompt(messages, max_new_tokens)
        specials = self.tokenizer.special_tokens
        stop_ids = {specials[s] for s in (IM_END, EOS) if s in specials}
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        idx = torch.tensor([prompt] * n, dtype=torch.long, device=self.device)  # (n, T)
        out = self.model.generate(
            idx,
            min(max_new_tokens, self.block_size - len(prompt)),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_id=specials.get(IM_END),
            generator=generator,
        )[:, len(prompt) :]  # (n, new)
        answers = []
        for row in out.tolist():
            ends = [k for k, t in enumerate(row) if t in stop_ids]
            answers.append(self.tokenizer.decode(row[: ends[0]] if ends else row))
        return answers

    def __repr__(self) -> str:
        return f"ChatModel(name={self.name!r}, block_size={self.block_size}, device={self.device})"


class ChatStream:
    """An iterator of text pieces; once it is exhausted it also tells how generation ended.

    ``prompt_tokens``, ``completion_tokens`` (tokens sampled, a stop token included) and
    ``finish_reason``: "stop" (a stop token or string), "length" (max_new_tokens or the context), or
    None (still running, or closed early).
    """

    def __init__(
        self,
        steps: Iterator[torch.Tensor],
        prompt_tokens: int,
        decoder: StreamDecoder,
        stop_ids: set[int],
        stop_texts: StopStrings,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._steps = steps
        self._pieces = self._run(decoder, stop_ids, stop_texts)

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early (e.g. the client went away): no further token is computed."""
        self._pieces.close()
        self._steps.close()

    def _run(self, decoder: StreamDecoder, stop_ids: set[int], stop_texts: StopStrings) -> Iterator[str]:
        finish = "length"  # unless a stop comes first: the steps ran out (max_new_tokens or the context)
        with contextlib.closing(self._steps):
            for next_id in self._steps:  # (1, 1)
                token = int(next_id)
                self.completion_tokens += 1
                if token in stop_ids:
                    finish = "stop"
                    break
                text, stopped = stop_texts.push(decoder.push(token))
                if stopped:
                    self.finish_reason = "stop"
                if text:
                    yield text
                if stopped:
                    return
        text, stopped = stop_texts.push(decoder.flush())
        text += "" if stopped else stop_texts.flush()
        self.finish_reason = "stop" if stopped else finish
        if text:
            yield text


# ----------------------------------------------------------------------------------------------------
# Named models.

ChatLoader = Callable[[Any], ChatModel]  # device (str, torch.device or None) -> ChatModel


def _load_smollm2(device: Any = None) -> ChatModel:
    from course_lib import smollm2  # imported only when asked for: it reads a GGUF file

    model, tokenizer = smollm2.load(device)
    return ChatModel(model, tokenizer, template=render_chat, name="smollm2")  # with its default system prompt


CHAT_MODELS: dict[str, ChatLoader] = {"smollm2": _load_smollm2}


def register_chat_model(name: str, loader: ChatLoader) -> None:
    """Make ``load_chat_model(name)`` (and ``--model name`` on the command line) call ``loader(device)``."""
    CHAT_MODELS[name] = loader


def load_chat_model(name: str, device: Any = None) -> ChatModel:
    """The chat model called ``name`` (see :data:`CHAT_MODELS`), on ``device`` (default: the best one)."""
    if name not in CHAT_MODELS:
        raise ValueError(f"unknown chat model {name!r}; known models are {sorted(CHAT_MODELS)}")
    return CHAT_MODELS[name](device)


# ----------------------------------------------------------------------------------------------------
# Command line: ``python -m course_lib chat`` (course_lib.cli parses the arguments).


def chat_main(args: argparse.Namespace) -> int:
    """Answer ``--prompt`` once, or talk in a loop reading stdin; returns the exit status."""
    try:
        chat_model = load_chat_model(args.model, args.device)
        options = dict(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            repetition_penalty=args.repetition_penalty,
        )
        system = [{"role": "system", "content": args.system}] if args.system else []
        if args.prompt is not None:
            _answer(chat_model, [*system, {"role": "user", "content": args.prompt}], options)
            return 0
        return repl(chat_model, system, options)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _answer(chat_model: ChatModel, messages: list[dict[str, str]], options: dict[str, Any]) -> str:
    """Stream the answer to stdout (control characters shown as U+FFFD, see ``printable``); cropping
    warnings become ``warning:`` lines on stderr. Returns the answer as the model wrote it."""

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pieces = chat_model.stream(messages, **options)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    answer = []
    for piece in pieces:
        print(printable(piece), end="", flush=True)
        answer.append(piece)
    print(flush=True)
    return "".join(answer)


def repl(chat_model: ChatModel, system: list[dict[str, str]], options: dict[str, Any]) -> int:
    """Read a message per line from stdin and stream each answer; /reset forgets, /exit or EOF ends."""
    print(f"chatting with {chat_model.name}: /reset starts over, /exit (or Ctrl-D) quits", file=sys.stderr)
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            history = []
            continue
        if not line.strip():
            continue
        turn = {"role": "user", "content": line}
        try:
            answer = _answer(chat_model, [*system, *history, turn], options)
        except PromptTooLongError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        history += [turn, {"role": "assistant", "content": answer}]
