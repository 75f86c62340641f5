"""Greedy decoding for GPUs: static key/value caches and one fixed-shape step, compiled.

:meth:`course_lib.gpt.GPT.generate` is the readable path: its cache grows a little every step, the
model checks its inputs, and each token costs a few hundred small kernel launches from Python. At
batch 1 on a GPU that launch overhead, not arithmetic, sets the speed. :class:`StaticDecoder` runs
the same model with :class:`~course_lib.attention.StaticKVCache` buffers, so every step has the same
shapes; ``torch.compile`` then fuses the step, and with ``mode="reduce-overhead"`` records it once as
a CUDA graph and replays it per token. The tokens are those of ``GPT.generate(..., temperature=0)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib.attention import StaticKVCache, attention
from course_lib.gpt import GPT
from course_lib.layers import apply_rotary


class StaticDecoder(nn.Module):
    """Greedy decoding of ``model`` for batches of ``batch_size`` rows and up to ``max_len`` positions
    (default block_size), prompt included.

    ``compile``: False runs the step eagerly; True or a torch.compile mode ("default",
    "reduce-overhead" = CUDA graphs, "max-autotune") compiles it once, at the first call.
    """

    def __init__(
        self, model: GPT, batch_size: int, max_len: int | None = None, compile: bool | str = False
    ) -> None:
        super().__init__()
        c = model.config
        max_len = max_len or c.block_size
        if max_len > c.block_size:
            raise ValueError(
                f"max_len={max_len} > block_size={c.block_size}; the model has no positions past it"
            )
        self.model = model
        ref = model.lm_head.weight
        self.caches = nn.ModuleList(
            StaticKVCache(batch_size, c.kv_heads, max_len, c.head_dim, ref.device, ref.dtype)
            for _ in range(c.n_layer)
        )
        self.register_buffer("slots", torch.arange(max_len, device=ref.device), persistent=False)
        self.register_buffer(
            "position", torch.zeros(1, dtype=torch.long, device=ref.device), persistent=False
        )
        self._step = self.greedy_step
        if compile:
            for buffer in self.buffers():  # the caches keep their addresses: CUDA graphs may write to them
                torch._dynamo.mark_static_address(buffer)
            mode = None if compile is True else compile
            self._step = torch.compile(self.greedy_step, mode=mode, fullgraph=True)

    @property
    def batch_size(self) -> int:
        return self.caches[0].k.size(0)

    @property
    def max_len(self) -> int:
        return self.caches[0].max_len

    def last_logits(self, idx: Tensor, positions: Tensor) -> Tensor:
        """Tokens idx (B, T) at ``positions`` (T,) -> logits (B, V) of the last one; fills the caches.

        The model's own modules in :meth:`GPT.hidden_states` order; only the attention differs: keys
        come from the static caches, and the mask lets a query at position p see slots 0 .. p.
        """
        m, c = self.model, self.model.config
        B, T = idx.shape
        nh, nkv, hs = c.n_head, c.kv_heads, c.head_dim
        x = m.transformer.wte(idx)  # (B, T, d)
        if "wpe" in m.transformer:
            x = x + m.transformer.wpe(positions)  # (B, T, d) + (T, d)
        mask = self.slots[None, :] <= positions[:, None]  # (T, max_len): True where a query may attend
        for block, cache in zip(m.transformer.h, self.caches):
            attn = block.attn
            q, k, v = attn.qkv(block.ln_1(x)).split([nh * hs, nkv * hs, nkv * hs], dim=-1)
            q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
            v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
            if m.rope is not None:
                cos, sin = m.rope.cos[positions].to(q.dtype), m.rope.sin[positions].to(q.dtype)  # (T, hs)
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            k, v = cache.update(k, v, positions)  # (B, nkv, max_len, hs)
            y = attention(q, k, v, attn_mask=mask, enable_gqa=True)  # (B, nh, T, hs)
            x = x + attn.proj(y.transpose(1, 2).reshape(B, T, nh * hs))
            x = x + block.mlp(block.ln_2(x))
        h = m.transformer.ln_f(x[:, -1])  # (B, d)
        return m.lm_head(h)[:, : c.vocab_size]  # (B, V): padding rows cut off

    def greedy_step(self, idx: Tensor, positions: Tensor) -> Tensor:
        """The next token (B, 1) after idx (B, T) at ``positions`` (T,): the step that gets compiled."""
        return self.last_logits(idx, positions).argmax(dim=-1, keepdim=True)

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int) -> Tensor:
        """prompt (B, T) -> (B, T + max_new_tokens), the greedy continuation.

        The prompt runs eagerly in one pass (its length varies); each new token then runs through the
        compiled one-token step. Earlier calls' cache contents are overwritten or masked, never read.
        """
        B, T = prompt.shape
        if B != self.batch_size:
            raise ValueError(
                f"prompt has {B} rows but the decoder was built for batch_size={self.batch_size}"
            )
        if T + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt {T} + {max_new_tokens} new tokens > max_len={self.max_len}; shorten the prompt or "
                "build the StaticDecoder with a larger max_len (at most block_size)"
            )
        was_training = self.model.training
        self.model.eval()
        try:
            self.model._check_idx(prompt, 0)
            self.model._check_ids(prompt)
            prompt = prompt.to(self.slots.device)
            out = [prompt]
            if max_new_tokens > 0:
                out.append(self.greedy_step(prompt, self.slots[:T]))  # prefill, eager
            for i in range(1, max_new_tokens):
                self.position.fill_(T + i - 1)  # (1,): where the last new token sits; same tensor every step
                if self._step is not self.greedy_step:
                    torch.compiler.cudagraph_mark_step_begin()  # a new replay: earlier outputs are ours now
                out.append(self._step(out[-1], self.position).clone())  # the next replay reuses its output
            return torch.cat(out, dim=1)
        finally:
            self.model.train(was_training)
