"""ChatML, the chat format SmolLM2-Instruct was tuned on, written out by hand instead of through Jinja.

A conversation is a list of messages; each becomes ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. When the
first message is not a system message, SmolLM2's template puts its default system prompt in front, and
``add_generation_prompt`` ends the text with ``<|im_start|>assistant\\n`` so that the model writes the reply:

    <|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    Hi!<|im_end|>
    <|im_start|>assistant

This is what the Jinja template in the GGUF file's ``tokenizer.chat_template`` renders (the tests compare the
two, and with transformers' ``apply_chat_template``). Content is pasted in as it is: a message that spells
``<|im_end|>`` is encoded as that special token, as the template would have it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ROLES = ("system", "user", "assistant")
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def check_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The messages as plain dicts; ValueError names the first that is not {"role": one of ROLES,
    "content": str}, or says the conversation is empty."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ValueError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("the conversation is empty; pass at least one message, e.g. {'role': 'user', ...}")
    for k, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"message {k} is {m!r}; each message is a dict with 'role' and 'content' keys")
        if m["role"] not in ROLES:
            raise ValueError(f"message {k} has role {m['role']!r}; allowed roles are {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(
                f"message {k} has content of type {type(m['content']).__name__}; content must be a str"
            )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render_chat(
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = True,
    system_prompt: str | None = SMOLLM2_SYSTEM_PROMPT,
) -> str:
    """The conversation as ChatML text, ready for ``tokenizer.encode`` (special tokens are allowed there).

    ``messages`` are ``{"role": "system" | "user" | "assistant", "content": str}`` dicts. ``system_prompt``
    is put first when the first message is not a system message (``None``: nothing is added).
    """
    check_messages(messages)
    parts = []
    if messages[0]["role"] != "system" and system_prompt is not None:
        parts.append(f"{IM_START}system\n{system_prompt}{IM_END}\n")
    for m in messages:
        parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


__all__ = ["IM_END", "IM_START", "ROLES", "SMOLLM2_SYSTEM_PROMPT", "check_messages", "render_chat"]
