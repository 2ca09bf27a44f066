"""Built-in models that torchvision does not have, built from torch.nn only.

``bench.measure.zoo:transformer_lm``: a GPT-style causal language model (torch.nn.TransformerEncoder with
a causal mask) with a sequence-length input: ``--seq-len`` / ``seq_len`` in a profile sets tokens
per sample (default 256). Sized like GPT-2 small (12 layers, d_model 768, 12 heads, vocab 32k).
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 32_000
DEFAULT_SEQ_LEN = 256


class TransformerLM(nn.Module):
    def __init__(
        self, vocab: int = VOCAB, d_model: int = 768, heads: int = 12, layers: int = 12, max_len: int = 4096
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        positions = torch.arange(seq, device=tokens.device)
        h = self.embed(tokens) + self.pos(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(seq, device=tokens.device)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(self.norm(h))


def transformer_lm() -> nn.Module:
    return TransformerLM()


def bench_make_batch(
    batch_size: int, device: torch.device, seq_len: int = DEFAULT_SEQ_LEN
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids; the targets are the inputs shifted by one (next-token prediction)."""
    tokens = torch.randint(0, VOCAB, (batch_size, seq_len + 1), device=device)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def bench_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
