"""Tiny random causal LMs and a word-level tokenizer for the JRT-Prompt and recall tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hazyzoo
from hazyzoo.evaluation import synthetic_tokenizer

# Plain words next to the synthetic task's vocabulary, for hand-written prompts.
EXTRA_WORDS = "the a cat dog sat on mat red blue green is big small and ran to".split()


def tokenizer():
    """The synthetic task's word-level tokenizer plus :data:`EXTRA_WORDS` (pad 0, eos 1)."""
    return synthetic_tokenizer(EXTRA_WORDS)


def based(vocab_size: int, seed: int = 0) -> hazyzoo.BasedForCausalLM:
    """A random tiny BASED (one mixer of each kind) with eos 1 and pad 0."""
    torch.manual_seed(seed)
    config = hazyzoo.BasedConfig.tiny(
        vocab_size=vocab_size, bos_token_id=1, eos_token_id=1, pad_token_id=0
    )
    return hazyzoo.BasedForCausalLM(config).eval()


def llama(vocab_size: int, seed: int = 0, max_positions: int = 512) -> LlamaForCausalLM:
    """A random two-layer Llama: an ordinary transformers causal LM."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def save_checkpoint(directory: Path) -> Path:
    """Save a tiny BASED and :func:`tokenizer` into ``directory`` (for the CLI)."""
    tok = tokenizer()
    based(len(tok)).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@torch.inference_mode()
def manual_greedy(model, tok, prompt: str, max_new_tokens: int, stop: str | None = "\n") -> str:
    """The reference: one prompt, no padding, argmax of a full forward per step, stop at eos,
    decode the new tokens (special tokens skipped) and cut at ``stop``."""
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, use_cache=False).logits[0, -1]
        token = int(logits.argmax())
        if token == tok.eos_token_id:
            break
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    text = tok.decode(new, skip_special_tokens=True)
    return text.split(stop)[0] if stop else text
