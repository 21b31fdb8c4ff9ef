"""
Object-agnostic prompt learning: two learned prompts, "[V1..Vn] object." and "[W1..Wn] damaged object.",
plus deep compound prompts replacing tokens inside the first text layers of the frozen CLIP text encoder.
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.model import CLIP
from torch import nn

__all__ = ["PROMPT_TEMPLATES", "PromptLearner", "encode_text_with_prompts"]

# Normal first, abnormal second: the column order of every similarity and probability in this package.
PROMPT_TEMPLATES = ("object.", "damaged object.")


class PromptLearner(nn.Module):
    """
    The learnable part of AnomalyCLIP; parameter and buffer names and shapes are the authors' checkpoint's.

    Args:
        clip: the frozen open_clip CLIP model whose token embedding builds the fixed prompt parts.
        n_ctx: learned context tokens per prompt.
        depth: deep compound prompt depth (``depth - 1`` text layers get learned tokens).
        t_n_ctx: learned tokens per deep layer.
        generator: random generator of the initialisation (normal, std 0.02, as the reference).
    """

    def __init__(
        self, clip: CLIP, n_ctx: int = 12, depth: int = 9, t_n_ctx: int = 4, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        width = int(clip.ln_final.weight.shape[0])
        self.n_ctx, self.depth, self.t_n_ctx = n_ctx, depth, t_n_ctx

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * 0.02)

        self.ctx_pos = normal(1, 1, n_ctx, width)
        self.ctx_neg = normal(1, 1, n_ctx, width)
        self.compound_prompts_text = nn.ParameterList([normal(t_n_ctx, width) for _ in range(depth - 1)])

        placeholder = " ".join(["X"] * n_ctx)
        texts = [f"{placeholder} {template}" for template in PROMPT_TEMPLATES]
        tokens = open_clip.tokenizer.tokenize(texts, context_length=clip.context_length).to(torch.int32)
        with torch.no_grad():
            embedded = clip.token_embedding(tokens.long().to(clip.token_embedding.weight.device)).float().cpu()
        for i, suffix in enumerate(("pos", "neg")):
            self.register_buffer(f"token_prefix_{suffix}", embedded[i, None, None, :1].clone())
            self.register_buffer(f"token_suffix_{suffix}", embedded[i, None, None, 1 + n_ctx :].clone())
            self.register_buffer(f"tokenized_prompts_{suffix}", tokens[i, None, None].clone())

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """
        Returns:
            prompt embeddings (2, L, D) [normal, abnormal], their token ids (2, L) and the deep prompts.
        """
        pos = torch.cat([self.token_prefix_pos, self.ctx_pos, self.token_suffix_pos], dim=2).flatten(0, 1)
        neg = torch.cat([self.token_prefix_neg, self.ctx_neg, self.token_suffix_neg], dim=2).flatten(0, 1)
        tokens = torch.cat([self.tokenized_prompts_pos.flatten(0, 1), self.tokenized_prompts_neg.flatten(0, 1)])
        return torch.cat([pos, neg], dim=0), tokens, list(self.compound_prompts_text)


def encode_text_with_prompts(
    clip: CLIP, prompts: torch.Tensor, tokens: torch.Tensor, deep_prompts: list[torch.Tensor]
) -> torch.Tensor:
    """
    Run CLIP's text transformer on prompt embeddings, inserting deep compound prompts.

    Before text layer ``i`` (1-based, ``2 <= i <= len(deep_prompts) + 1``) the tokens right after the start
    token are replaced by ``deep_prompts[i - 2]``. The reference casts these to float16 before inserting them
    (``.half()``), so they are rounded to fp16 precision here too: released prompts were trained that way.

    Returns:
        (P, E) unnormalised text features, taken at each prompt's end-of-text token.
    """
    x = prompts + clip.positional_embedding.to(prompts.dtype)
    transformer = clip.transformer
    batch_first = getattr(transformer, "batch_first", True)
    mask = clip.attn_mask
    for index, block in enumerate(transformer.resblocks):
        if 1 <= index <= len(deep_prompts):
            deep = deep_prompts[index - 1].half().to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], deep, x[:, 1 + deep.shape[1] :]], dim=1)
        x = block(x, attn_mask=mask) if batch_first else block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
    x = clip.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    projection = clip.text_projection
    return projection(x) if isinstance(projection, nn.Module) else x @ projection
