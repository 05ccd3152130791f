"""Hydragen generation (``hazyzoo.hydragen.generate``) on transformers' own attention models
(Llama, Qwen2; tiny, float32, CPU, GQA 4:2): what it returns is what ``model.generate`` returns
for the same prompts replicated per sequence and left-padded (tokens, logits, sampling with a
seed, eos/pad, streamers, static cache), whatever the levels / ragged prompts / suffixes; the
shared-prefix cache stores one copy per group; the attention implementation is restored;
``attn_implementation="hydragen"`` is SDPA without a shared prefix; the Triton kernels give the
reference's results; bad input fails early naming what was wrong."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.generation.streamers import BaseStreamer

import hazyzoo  # noqa: F401  (registers attn_implementation="hydragen")
from hazyzoo import hydragen
from hazyzoo.kernels import dispatch
from tests.kernels.conftest import requires_triton

PAD = 0
VOCAB = 97
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=PAD,
    eos_token_id=1,
    bos_token_id=2,
)
HEAD_DIM = 64 // 4
# Greedy, with the per-step logits to compare.
GREEDY = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_logits=True)
# float32 logits of hydragen vs model.generate (observed ~2e-7).
LOGITS_ATOL = 1e-5


def make_model(family: str, attn: str = "sdpa"):
    """A tiny random model of ``family`` (same weights for every ``attn``); no eos, so that
    generation runs its full length unless a test asks for an eos."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**CONFIG, attn_implementation=attn)).eval()
    assert model.config._attn_implementation == attn
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture(scope="module")
def models():
    """``models[family, attn]``, built once per module."""
    return {(f, a): make_model(f, a) for f in FAMILIES for a in ("sdpa", "eager")}


def tokens(seed: int, *lengths: int) -> list[list[int]]:
    """Random prompts of the given lengths, ids in [3, VOCAB) (never PAD, eos or bos)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def left_padded(prompts: list[list[int]], pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """What a tokenizer with left padding gives: ``input_ids`` and ``attention_mask``."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def hf_generate(model, prompts: list[list[int]], **kwargs):
    """``model.generate`` on the replicated prompts, left-padded with the pad id
    ``generate`` uses (hydragen pads the prompts with it too)."""
    ids, mask = left_padded(prompts, kwargs.get("pad_token_id", PAD))
    return model.generate(ids, attention_mask=mask, **kwargs)


def assert_same_generation(out, ref, atol: float = LOGITS_ATOL) -> None:
    """Token-identical sequences and per-step logits within ``atol``."""
    assert out.sequences.shape == ref.sequences.shape
    assert torch.equal(out.sequences, ref.sequences), f"{out.sequences}\n!=\n{ref.sequences}"
    assert len(out.logits) == len(ref.logits)
    for step, (a, b) in enumerate(zip(out.logits, ref.logits, strict=True)):
        diff = (a - b).abs().max().item()
        assert diff <= atol, f"step {step}: logits differ by {diff}"


def scenario(name: str) -> tuple[dict, list[list[int]]]:
    """``(hydragen.generate kwargs, the prompts model.generate gets)`` for each case."""
    prefix, a, b, c = tokens(1, 11, 4, 2, 5)
    if name == "one_level":  # one prompt, ragged suffixes
        suffixes = tokens(2, 3, 1, 5, 2)
        return dict(prefix_ids=prefix, suffix_ids=suffixes), [prefix + s for s in suffixes]
    if name == "two_levels":  # one prompt, then two ragged ones, 8 ragged suffixes
        suffixes = tokens(3, 3, 1, 5, 2, 2, 4, 1, 3)
        level2 = [a, b]
        prompts = [prefix + level2[i // 4] + s for i, s in enumerate(suffixes)]
        return dict(prefix_ids=[[prefix], level2], suffix_ids=suffixes), prompts
    if name == "groups_tensor":  # one level of 2 prompts as a tensor, tensor suffixes
        level = torch.tensor([prefix[:6], prefix[5:]])
        suffixes = torch.tensor(tokens(4, 3, 3, 3, 3))
        prompts = [level[i // 2].tolist() + s.tolist() for i, s in enumerate(suffixes)]
        return dict(prefix_ids=level, suffix_ids=suffixes), prompts
    if name == "no_suffix":  # several different-length prompts, continued directly
        prompts = [prefix, a, c, [a[0]]]
        return dict(prefix_ids=prompts), prompts
    if name == "two_levels_no_suffix":
        level2 = [a, b, c]
        return dict(prefix_ids=[[prefix], level2]), [prefix + p for p in level2]
    raise KeyError(name)


SCENARIOS = ["one_level", "two_levels", "groups_tensor", "no_suffix", "two_levels_no_suffix"]


@pytest.mark.parametrize(
    "lengths", [dict(max_length=17), dict(max_length=17, min_length=16), dict(max_new_tokens=3)]
)
def test_lengths_count_the_replicated_prompt(models, lengths):
    """``max_length`` / ``min_length`` mean what they mean in ``model.generate`` (the longest
    replicated prompt + new tokens), although hydragen's own prompt layout is wider."""
    model = models["llama", "sdpa"]
    (long, short), suffixes = tokens(7, 9, 2), tokens(8, 1, 6)
    prompts = [long + suffixes[0], short + suffixes[1]]
    kwargs = dict(do_sample=False, **lengths)
    out = hydragen.generate(model, [long, short], suffix_ids=suffixes, **kwargs)
    ref = hf_generate(model, prompts, **kwargs)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)


def test_num_return_sequences_from_the_generation_config(models):
    """A ``generation_config`` with ``num_return_sequences`` is honoured as by
    ``model.generate`` (and the user's config object is not modified)."""
    from transformers import GenerationConfig

    model = models["qwen2", "sdpa"]
    prompt = tokens(9, 7)[0]
    config = GenerationConfig(do_sample=True, num_return_sequences=3, max_new_tokens=4)
    torch.manual_seed(11)
    out = hydragen.generate(model, prompt, generation_config=config)
    torch.manual_seed(11)
    ref = model.generate(torch.tensor([prompt]), generation_config=config)
    assert out.shape == ref.shape == (3, 7 + 4)
    assert torch.equal(out, ref)
    assert config.num_return_sequences == 3 and config.max_new_tokens == 4


# ------------------------------------------------------------------------------------------
# Exactness against model.generate
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_generate_on_replicated_prompts(models, family, attn, name):
    """Greedy tokens and logits == model.generate on the replicated, left-padded prompts
    (SDPA or eager baseline), for one or two levels, ragged prompts and suffixes, no suffix."""
    model = models[family, attn]
    kwargs, prompts = scenario(name)
    out = hydragen.generate(model, **kwargs, **GREEDY)
    ref = hf_generate(model, prompts, **GREEDY)
    assert out.sequences.shape[0] == len(prompts)
    assert_same_generation(out, ref)


@pytest.mark.parametrize("name", ["no_suffix", "two_levels"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_matches_generate_with_the_same_seed(models, family, name):
    """do_sample=True, num_return_sequences=3: the same seed gives the same samples as
    model.generate (sequence i continues prompt i // 3, as transformers lays them out)."""
    model = models[family, "sdpa"]
    kwargs, prompts = scenario(name)
    sample = dict(GREEDY, do_sample=True, num_return_sequences=3, max_new_tokens=8)
    torch.manual_seed(1234)
    out = hydragen.generate(model, **kwargs, **sample)
    torch.manual_seed(1234)
    ref = hf_generate(model, prompts, **sample)
    assert out.sequences.shape[0] == 3 * len(prompts)
    assert_same_generation(out, ref)
    torch.manual_seed(99)  # another seed: other samples (the seed is what decides)
    assert not torch.equal(hydragen.generate(model, **kwargs, **sample).sequences, out.sequences)


@pytest.mark.parametrize("family", FAMILIES)
def test_static_cache_matches_dynamic(models, family):
    """cache_implementation="static" (preallocated suffix, for compiled decode) gives the same
    tokens and logits as the default dynamic cache and as model.generate."""
    model = models[family, "sdpa"]
    kwargs, prompts = scenario("two_levels")
    dynamic = hydragen.generate(model, **kwargs, **GREEDY)
    static = hydragen.generate(model, **kwargs, cache_implementation="static", **GREEDY)
    assert_same_generation(static, dynamic)
    assert_same_generation(static, hf_generate(model, prompts, **GREEDY))
    # The returned cache: the prefix stored once per group (1, then 2) for the 8 sequences;
    # a preallocated suffix (longest suffix 5 + 6 new tokens) only for "static".
    for out in (static, dynamic):
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        assert isinstance(cache, hydragen.SharedPrefixCache)
        assert cache.group_sizes == [1, 2] and cache.prefix_length == 11 + 4
    static_cache = static.cache if hasattr(static, "cache") else static.past_key_values
    assert [layer.max_suffix_length for layer in static_cache.layers] == [5 + 6] * 2


@pytest.mark.parametrize("family", FAMILIES)
def test_eos_stops_and_pads_like_generate(models, family):
    """An eos that gets generated (the first greedy token of sequence 1) finishes that
    sequence, which is then padded with pad_token_id, as model.generate does."""
    model = models[family, "sdpa"]
    kwargs, prompts = scenario("one_level")
    width = left_padded(prompts)[0].shape[1]
    first = hf_generate(model, prompts, **GREEDY).sequences[:, width]
    eos = int(first[1])
    pad = 96 if eos != 96 else 95  # a visible pad id
    stop = dict(GREEDY, eos_token_id=eos, pad_token_id=pad)
    out = hydragen.generate(model, **kwargs, **stop)
    ref = hf_generate(model, prompts, **stop)
    assert_same_generation(out, ref)
    assert out.sequences[1, width] == eos
    assert out.sequences.shape[1] > width + 1  # the others ran on: sequence 1 is padded
    assert (out.sequences[1, width + 1 :] == pad).all()


class Collector(BaseStreamer):
    """What a streamer is given: each ``put`` value, and how often ``end`` ran."""

    def __init__(self) -> None:
        self.puts: list[torch.Tensor] = []
        self.ends = 0

    def put(self, value: torch.Tensor) -> None:
        self.puts.append(value.clone())

    def end(self) -> None:
        self.ends += 1


@pytest.mark.parametrize("family", FAMILIES)
def test_streamer_receives_the_new_tokens(models, family):
    """A streamer gets the new tokens step by step, as from model.generate; without
    return_dict_in_generate the result is the plain sequences tensor."""
    model = models[family, "sdpa"]
    kwargs, prompts = scenario("one_level")
    mine, theirs = Collector(), Collector()
    out = hydragen.generate(model, **kwargs, max_new_tokens=4, streamer=mine)
    ref = hf_generate(model, prompts, max_new_tokens=4, streamer=theirs)
    assert isinstance(out, torch.Tensor) and torch.equal(out, ref)
    assert mine.ends == theirs.ends == 1
    assert len(mine.puts) == len(theirs.puts) == 5  # the prompt, then 4 steps
    width = left_padded(prompts)[0].shape[1]
    for step, (a, b) in enumerate(zip(mine.puts[1:], theirs.puts[1:], strict=True)):
        assert torch.equal(a, b) and torch.equal(a, out[:, width + step]), f"step {step}"
    # The prompt put first is the replicated prompts, left-padded, as model.generate puts it.
    assert torch.equal(mine.puts[0], theirs.puts[0])


# ------------------------------------------------------------------------------------------
# The attention implementation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attn_implementation_is_restored(models, attn):
    """After hydragen.generate, also one that fails inside model.generate, the model runs its
    own attention again and no attention module keeps the shared-prefix cache."""
    model = models["llama", attn]
    kwargs, prompts = scenario("one_level")
    hydragen.generate(model, **kwargs, max_new_tokens=2)
    assert model.config._attn_implementation == attn
    with pytest.raises(ValueError, match="foo_bar"):  # model.generate rejects it
        hydragen.generate(model, **kwargs, max_new_tokens=2, foo_bar=1)
    assert model.config._attn_implementation == attn
    assert not any(hasattr(m, hydragen.MODULE_CACHE_ATTR) for m in model.modules())
    ref = hf_generate(model, prompts, **GREEDY)
    assert_same_generation(hydragen.generate(model, **kwargs, **GREEDY), ref)


def test_hydragen_attn_model_is_sdpa_without_shared_prefix(models, tmp_path):
    """A model loaded with attn_implementation="hydragen" gives SDPA's logits and generations
    when no shared-prefix cache is involved (training, plain generate), and hydragen.generate
    works on it (keeping "hydragen")."""
    sdpa = models["llama", "sdpa"]
    sdpa.save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="hydragen").eval()
    model.generation_config.eos_token_id = None
    assert model.config._attn_implementation == hydragen.ATTN_IMPLEMENTATION == "hydragen"
    prompts = [*tokens(5, 9, 4), [7]]
    ids, mask = left_padded(prompts)
    torch.testing.assert_close(
        model(ids, attention_mask=mask).logits, sdpa(ids, attention_mask=mask).logits
    )
    torch.testing.assert_close(model(ids).logits, sdpa(ids).logits)  # no mask at all
    assert_same_generation(
        hf_generate(model, prompts, **GREEDY), hf_generate(sdpa, prompts, **GREEDY)
    )
    kwargs, prompts = scenario("two_levels")
    out = hydragen.generate(model, **kwargs, **GREEDY)
    assert_same_generation(out, hf_generate(sdpa, prompts, **GREEDY))
    assert model.config._attn_implementation == "hydragen"


# ------------------------------------------------------------------------------------------
# The shared-prefix cache
# ------------------------------------------------------------------------------------------


def test_prefill_prefix_stores_one_copy_per_group(models):
    """A 2-level prefix (1 prompt, then 2 ragged ones) is stored once per group, not per
    sequence: group sizes, prefix length, seq length and bytes say so; the returned logits
    are the next-token logits of each full prompt."""
    model = models["llama", "sdpa"]
    outer, a, b = tokens(6, 7, 4, 2)
    cache, levels, logits = hydragen.prefill_prefix(model, [[outer], [a, b]], pad_token_id=PAD)
    assert isinstance(cache, hydragen.SharedPrefixCache)
    assert cache.group_sizes == [1, 2]
    assert cache.prefix_length == 7 + 4 == cache.get_seq_length()
    per_token = 2 * 2 * HEAD_DIM * 4  # keys + values, Hkv = 2, float32
    layers = CONFIG["num_hidden_layers"]
    assert cache.prefix_bytes() == layers * per_token * (1 * 7 + 2 * 4)
    for layer in cache.layers:
        assert [lv.keys.shape for lv in layer.levels] == [(1, 2, 7, HEAD_DIM), (2, 2, 4, HEAD_DIM)]
        assert layer.levels[0].key_mask is None  # nothing padded in level 0
        want = torch.tensor([[[True] * 4], [[False, False, True, True]]])
        assert torch.equal(layer.levels[1].key_mask, want)
    assert [ids.shape for ids, _ in levels] == [(1, 7), (2, 4)]
    ids, mask = left_padded([outer + a, outer + b])
    torch.testing.assert_close(logits, model(ids, attention_mask=mask).logits[:, -1])
    assert model.config._attn_implementation == "sdpa"


# ------------------------------------------------------------------------------------------
# The Triton kernels and half precision
# ------------------------------------------------------------------------------------------


@requires_triton
def test_triton_kernels_match_reference_in_a_model(models, monkeypatch):
    """HAZYZOO_KERNELS=triton (interpreted on CPU) runs Hydragen's attention in the kernels,
    with the reference path's tokens and logits (within 1e-4)."""
    model = models["llama", "sdpa"]
    kwargs, _ = scenario("two_levels")
    short = dict(GREEDY, max_new_tokens=3)
    monkeypatch.setenv("HAZYZOO_KERNELS", "torch")
    want = hydragen.generate(model, **kwargs, **short)
    calls = []
    for name in ("attention_with_lse", "merge_attention"):
        op = dispatch.get_op(name)

        def spy(*args, _fn=op.triton, _name=name, **kw):
            calls.append(_name)
            return _fn(*args, **kw)

        monkeypatch.setitem(dispatch._REGISTRY, name, dataclasses.replace(op, triton=spy))
    monkeypatch.setenv("HAZYZOO_KERNELS", "triton")
    got = hydragen.generate(model, **kwargs, **short)
    assert "attention_with_lse" in calls and "merge_attention" in calls
    assert_same_generation(got, want, atol=1e-4)


# Logit tolerance at half precision vs model.generate at the same dtype (observed over these
# scenarios and both families: bf16 <= 4e-3, fp16 <= 5e-4, for logits of magnitude ~0.4):
# hydragen merges in fp32 and rounds once per layer, SDPA rounds differently. Greedy tokens
# can then differ at near-ties (llama "two_levels" does not), after which logits differ.
HALF_ATOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_close_to_generate(models, dtype):
    """bf16 / fp16 models on CPU: the right shapes, and logits close to model.generate's at
    that dtype (compared while the greedy tokens agree)."""
    model = copy.deepcopy(models["llama", "sdpa"]).to(dtype)
    kwargs, prompts = scenario("two_levels")
    out = hydragen.generate(model, **kwargs, **GREEDY)
    ref = hf_generate(model, prompts, **GREEDY)
    assert out.sequences.shape == ref.sequences.shape
    width = left_padded(prompts)[0].shape[1]
    assert torch.equal(out.sequences[:, :width], ref.sequences[:, :width])
    for step, (a, b) in enumerate(zip(out.logits, ref.logits, strict=True)):
        diff = (a.float() - b.float()).abs().max().item()
        assert diff <= HALF_ATOL[dtype], f"step {step}: logits differ by {diff}"
        if not torch.equal(out.sequences[:, width + step], ref.sequences[:, width + step]):
            break  # the inputs of the later steps differ


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------

P, Q, R = tokens(7, 5, 3, 4)
BAD_INPUTS = [
    (
        "level count",
        dict(prefix_ids=[[P, Q], [P, Q, R]]),
        ValueError,
        r"prefix level 1 has 3 prompts, not a multiple of level 0's 2",
    ),
    (
        "suffix count",
        dict(prefix_ids=[P, Q], suffix_ids=[[5], [6], [7]]),
        ValueError,
        r"suffix_ids has 3 sequences, not a multiple of the 2 prompts",
    ),
    ("empty list", dict(prefix_ids=[]), ValueError, r"prefix_ids level 0 must be a non-empty"),
    ("empty prompt", dict(prefix_ids=[[]]), ValueError, r"prefix_ids level 0\[0\] is empty"),
    (
        "empty tensor",
        dict(prefix_ids=torch.empty(0, dtype=torch.long)),
        ValueError,
        r"prefix_ids level 0 is empty",
    ),
    (
        "empty level",
        dict(prefix_ids=[[P], []]),
        ValueError,
        r"prefix_ids level 1 must be a non-empty",
    ),
    ("no prefix", dict(prefix_ids=None), ValueError, "prefix_ids is required"),
    (
        "float tensor",
        dict(prefix_ids=torch.tensor(P, dtype=torch.float32)),
        TypeError,
        r"prefix_ids level 0 must hold integer token ids, got dtype torch.float32",
    ),
    (
        "float tokens",
        dict(prefix_ids=[1.0, 2.0]),
        TypeError,
        r"prefix_ids level 0\[0\] must be a sequence of int token ids",
    ),
    ("empty suffix", dict(prefix_ids=P, suffix_ids=[[5], []]), ValueError, r"suffix_ids\[1\]"),
    ("num_beams", dict(prefix_ids=P, num_beams=2), ValueError, r"beam search \(num_beams=2\)"),
    (
        "attention_mask",
        dict(prefix_ids=P, attention_mask=torch.ones(1, 5)),
        ValueError,
        "builds 'attention_mask' itself",
    ),
    (
        "input_ids",
        dict(prefix_ids=P, input_ids=torch.tensor([P])),
        ValueError,
        "builds 'input_ids' itself",
    ),
    (
        "no sequences",
        dict(prefix_ids=P, num_return_sequences=0),
        ValueError,
        "num_return_sequences must be >= 1, got 0",
    ),
    (
        "bool sequences",
        dict(prefix_ids=P, num_return_sequences=True),
        TypeError,
        "num_return_sequences must be an int",
    ),
    (
        "greedy copies",
        dict(prefix_ids=P, num_return_sequences=2),
        ValueError,
        r"greedy decoding.*num_return_sequences=2.*do_sample=True",
    ),
    (
        "offloaded",
        dict(prefix_ids=P, cache_implementation="offloaded"),
        ValueError,
        r"cache_implementation must be None, 'dynamic' or 'static'.*'offloaded'",
    ),
    (
        "static without length",
        dict(prefix_ids=P, cache_implementation="static", max_new_tokens=None),
        ValueError,
        "needs max_new_tokens",
    ),
    (
        "assisted",
        dict(prefix_ids=P, prompt_lookup_num_tokens=3),
        ValueError,
        r"does not support prompt-lookup decoding \(prompt_lookup_num_tokens\)",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises(models, kwargs, exc, pattern):
    """Bad prompts, suffixes and generate options fail early, naming what was wrong, and
    leave the model as it was."""
    model = models["llama", "sdpa"]
    with pytest.raises(exc, match=pattern):
        hydragen.generate(model, **{"max_new_tokens": 2, **kwargs})
    assert model.config._attn_implementation == "sdpa"


def test_model_without_attention_interface_is_rejected():
    """A model whose attention does not go through transformers' AttentionInterface (a zoo
    linear-attention model) is refused with a TypeError saying why."""
    from hazyzoo import BasedConfig, BasedForCausalLM

    model = BasedForCausalLM(BasedConfig.tiny()).eval()
    with pytest.raises(TypeError, match="BasedForCausalLM does not dispatch attention"):
        hydragen.generate(model, [3, 4, 5], max_new_tokens=2)
    with pytest.raises(TypeError, match="AttentionInterface"):
        hydragen.prefill_prefix(model, [3, 4, 5])
