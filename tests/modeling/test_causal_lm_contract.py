"""Contract tests every registered hazyzoo causal LM must pass (DESIGN.md, contracts 1-2).

Parametrised over ``hazyzoo.CAUSAL_LM_REGISTRY``: a new model joins by registering and
giving its config class a ``tiny()`` constructor and its model class ``lora_target_modules``.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.generation.streamers import BaseStreamer

import hazyzoo

MODEL_TYPES = sorted(hazyzoo.CAUSAL_LM_REGISTRY)
ATOL = 1e-4  # fp32 tolerance for parallel vs recurrent logits


def make_model(model_type: str, **overrides) -> torch.nn.Module:
    cls = hazyzoo.CAUSAL_LM_REGISTRY[model_type]
    torch.manual_seed(0)
    model = cls(cls.config_class.tiny(**overrides)).eval()
    # Random, non-trivial weights everywhere (norms and biases too), so no path hides.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def random_ids(model, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, model.config.vocab_size, (batch, length), generator=g)


@pytest.fixture(params=MODEL_TYPES)
def model_type(request) -> str:
    return request.param


def test_save_load_bit_exact_through_safetensors(model_type, tmp_path):
    model = make_model(model_type)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json"} <= files
    assert not any(f.endswith(".bin") for f in files)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    if model.config.tie_word_embeddings:
        assert "lm_head.weight" not in stored, "tied head must not be duplicated on disk"
    for loader in (type(model), AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is type(model)
        ref_state, new_state = model.state_dict(), loaded.state_dict()
        assert ref_state.keys() == new_state.keys()
        for key in ref_state:
            assert torch.equal(ref_state[key], new_state[key]), key
        if model.config.tie_word_embeddings:
            assert (
                loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
            )
        ids = random_ids(model, 2, 17)
        with torch.no_grad():
            assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_auto_classes_round_trip(model_type, tmp_path):
    model = make_model(model_type)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is type(model.config)
    volatile = {"_name_or_path", "transformers_version"}
    saved = {k: v for k, v in config.to_dict().items() if k not in volatile}
    assert saved == {k: v for k, v in model.config.to_dict().items() if k not in volatile}
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, type(model.model))
    fresh = AutoModelForCausalLM.from_config(config)
    assert type(fresh) is type(model)


def test_step_by_step_decoding_matches_parallel_forward(model_type):
    model = make_model(model_type)
    prompt, steps = 8, 64
    ids = random_ids(model, 2, prompt + steps)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :prompt], use_cache=True)
        cache = out.past_key_values
        logits = [out.logits]
        for t in range(prompt, prompt + steps):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits.append(out.logits)
    stepped = torch.cat(logits, dim=1)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)
    # The cache does not grow with the sequence.
    assert cache.get_seq_length() == prompt + steps


def test_chunked_continuation_matches_parallel_forward(model_type):
    model = make_model(model_type)
    ids = random_ids(model, 2, 30)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = model.make_cache()
        parts = []
        for lo, hi in ((0, 7), (7, 19), (19, 20), (20, 30)):
            parts.append(model(ids[:, lo:hi], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=ATOL, rtol=0)


def test_cache_size_is_constant(model_type):
    model = make_model(model_type)
    with torch.no_grad():
        cache = model(random_ids(model, 1, 40), use_cache=True).past_key_values
        size = cache.nbytes()
        ids = random_ids(model, 1, 1, seed=3)
        for _ in range(10):
            cache = model(ids, past_key_values=cache, use_cache=True).past_key_values
    assert cache.nbytes() == size


def test_generate_cached_equals_uncached_and_argmax_loop(model_type):
    model = make_model(model_type)
    ids = random_ids(model, 2, 9)
    kwargs = dict(max_new_tokens=20, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, use_cache=True, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (2, 29)
    assert torch.equal(cached, uncached)
    seq = ids
    with torch.no_grad():
        for _ in range(20):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(cached, seq)


def test_left_padded_batch_generation_equals_one_by_one(model_type):
    model = make_model(model_type)
    pad = 0
    lengths = [11, 6, 3]
    prompts = [random_ids(model, 1, n, seed=10 + n)[0] for n in lengths]
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = p
        mask[row, width - len(p) :] = 1
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=pad)
    batched = model.generate(ids, attention_mask=mask, **kwargs)[:, width:]
    for row, p in enumerate(prompts):
        single = model.generate(p[None], **kwargs)[:, len(p) :]
        assert torch.equal(batched[row : row + 1], single), f"row {row} differs"


class _Collect(BaseStreamer):
    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.detach().clone().reshape(-1))

    def end(self) -> None:
        self.ended = True


def test_sampling_num_return_sequences_and_streamer(model_type):
    model = make_model(model_type)
    ids = random_ids(model, 1, 5)
    kwargs = dict(do_sample=True, top_k=20, temperature=1.3, max_new_tokens=10, pad_token_id=0)
    torch.manual_seed(123)
    a = model.generate(ids, num_return_sequences=3, **kwargs)
    torch.manual_seed(123)
    b = model.generate(ids, num_return_sequences=3, **kwargs)
    assert a.shape == (3, 15)
    assert torch.equal(a, b), "sampling with a fixed seed must be reproducible"
    assert torch.equal(a[:, :5], ids.expand(3, -1))
    assert len({tuple(r.tolist()) for r in a[:, 5:]}) > 1, "3 samples at T=1.3 should differ"
    streamer = _Collect()
    out = model.generate(ids, max_new_tokens=7, do_sample=False, pad_token_id=0, streamer=streamer)
    assert streamer.ended
    assert torch.equal(torch.cat(streamer.chunks), out[0])


def _grads(model, ids) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_same_gradients(model_type):
    model = make_model(model_type).train()
    ids = random_ids(model, 2, 16)
    plain = _grads(model, ids)
    enable = (
        getattr(model, "activation_checkpointing_enable", None)
        or model.gradient_checkpointing_enable
    )
    enable()
    on = getattr(type(model), "is_activation_checkpointing", None)  # 5.23+; 5.17 lacks it
    assert model.is_activation_checkpointing if on is not None else model.is_gradient_checkpointing
    checkpointed = _grads(model, ids)
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_peft_lora_trains_saves_and_reloads(model_type, tmp_path):
    peft = pytest.importorskip("peft")
    model = make_model(model_type)
    model.save_pretrained(tmp_path / "base")
    targets = type(model).lora_target_modules
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    lora = peft.get_peft_model(model, config)
    wrapped = {n.split(".")[-1] for n, m in lora.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(targets) & {n.split(".")[-1] for n, _ in model.named_modules()}
    lora.train()
    ids = random_ids(model, 2, 12)
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    before = lora(ids, labels=ids).loss
    before.backward()
    opt.step()
    lora.eval()
    with torch.no_grad():
        after_logits = lora(ids).logits
    assert not torch.equal(
        after_logits, model.__class__.from_pretrained(tmp_path / "base")(ids).logits
    )
    lora.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    # is_trainable=True: the adapter comes back as it was saved, trainable. (PyTorch's CPU
    # F.linear takes another GEMM path for weights with requires_grad=True, so a frozen reload
    # would differ from the trainable original in the last bit while holding the same weights.)
    reloaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter", is_trainable=True)
    reloaded.eval()
    trained_state, reloaded_state = lora.state_dict(), reloaded.state_dict()
    assert trained_state.keys() == reloaded_state.keys()
    for key in trained_state:
        assert torch.equal(trained_state[key], reloaded_state[key]), key
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, after_logits)
