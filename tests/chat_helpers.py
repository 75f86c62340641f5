"""A tiny stand-in chat model for the chat and serve tests: a random Llama-style course_lib GPT and a
BPE tokenizer trained here with ChatML's special tokens (the same classes as the real SmolLM2 loader)."""

from __future__ import annotations

import functools

import torch

from course_lib.chat import ChatModel
from course_lib.gpt import GPT, get_config
from course_lib.tokenizers import BPETokenizer

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TEXT = (
    "The cat sat on the mat. A dog ran to the park and back again. "
    "Hello! How are you today? I am fine, thank you. What is two plus two? Two plus two is four. "
    "Models read tokens, predict the next one, and write text one piece at a time. "
) * 4


@functools.cache
def tiny_tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXT, vocab_size=320, special_tokens=SPECIALS, show_progress=False)


def tiny_chat_model(block_size: int = 128, seed: int = 0, name: str = "tiny") -> ChatModel:
    """A fresh random llama-tiny GPT (block_size positions) with the tiny tokenizer."""
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = GPT(get_config("llama-tiny", vocab_size=tok.vocab_size, block_size=block_size))
    return ChatModel(model, tok, name=name)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
