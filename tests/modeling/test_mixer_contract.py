"""The mixer contract (hazyzoo/modeling/layers/protocol.py), for every registered mixer.

A mixer joins these tests by registering itself (``register_sequence_mixer`` /
``register_channel_mixer`` with a ``test_config``): pieces through its cache layer == one call
over the whole sequence (the first piece holding the ``noncausal_prefix_length`` leading tokens
a prefix mixer such as JRT's reads non-causally), left padding invisible to the real tokens, a cache layer that survives
transformers' batch operations; channel mixers act on each position alone.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from hazyzoo.modeling.cache import HazyCache
from hazyzoo.modeling.layers import CHANNEL_MIXERS, SEQUENCE_MIXERS, MixerOutput
from hazyzoo.modeling.layers.protocol import ChannelMixer, SequenceMixer, split_mixer_output

ATOL = 1e-5


def build(entry, layer_idx: int = 0) -> torch.nn.Module:
    """The registered mixer, built from its test config, with random non-trivial weights."""
    torch.manual_seed(0)
    mixer = entry.cls.from_config(entry.test_config(), layer_idx).eval()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return mixer


def run(mixer, x, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return split_mixer_output(mixer(x, **kwargs))[0]


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def feed(mixer, x, cuts, mask=None) -> tuple[torch.Tensor, HazyCache]:
    """Run ``x`` through a fresh cache layer in the pieces ``cuts`` (as the model does: the
    cache counts positions after each call)."""
    cache = HazyCache([mixer.make_cache_layer()])
    pos = (
        positions(mask)
        if mask is not None
        else torch.arange(x.shape[1])[None].expand(x.shape[0], -1)
    )
    outs = []
    for lo, hi in itertools.pairwise(cuts):
        piece_mask = None if mask is None else mask[:, lo:hi]
        outs.append(
            run(
                mixer,
                x[:, lo:hi],
                attention_mask=piece_mask,
                position_ids=pos[:, lo:hi],
                cache_layer=cache.layers[0],
            )
        )
        cache.advance(hi - lo)
    return torch.cat(outs, dim=1), cache


@pytest.fixture(params=sorted(SEQUENCE_MIXERS))
def sequence_entry(request):
    entry = SEQUENCE_MIXERS[request.param]
    assert entry.test_config is not None, f"{request.param} registered without a test_config"
    return entry


@pytest.fixture(params=sorted(CHANNEL_MIXERS))
def channel_entry(request):
    entry = CHANNEL_MIXERS[request.param]
    assert entry.test_config is not None, f"{request.param} registered without a test_config"
    return entry


def _input(mixer_config, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, mixer_config.hidden_size, generator=g)


def test_sequence_mixer_follows_the_protocol(sequence_entry):
    mixer = build(sequence_entry)
    assert isinstance(mixer, SequenceMixer)
    assert mixer.layer_idx == 0
    assert build(sequence_entry, layer_idx=3).layer_idx == 3


def first_call_covers_prefix(cuts: list[int], prefix: int) -> list[int]:
    """``cuts`` with the first piece widened to hold a non-causal prefix of ``prefix`` tokens
    (a mixer that reads its first tokens non-causally needs them all in the first call)."""
    first = max(cuts[1], min(prefix, cuts[-1]))
    return [0, first, *(c for c in cuts[2:] if c > first)]


def test_pieces_through_the_cache_equal_one_call(sequence_entry):
    mixer = build(sequence_entry)
    prefix = getattr(mixer, "noncausal_prefix_length", 0)
    x = _input(sequence_entry.test_config(), 2, 23)
    full = run(mixer, x, position_ids=torch.arange(23)[None].expand(2, -1))
    for cuts in ([0, 23], [0, 1, 2, 3, 23], [0, 9, 10, 17, 23], [0, *list(range(5, 24))]):
        cuts = first_call_covers_prefix(cuts, prefix)
        stepped, cache = feed(mixer, x, cuts)
        torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0, msg=str(cuts))
        assert cache.get_seq_length() == 23


def test_decode_steps_update_the_state_in_place(sequence_entry):
    """A layer that promises CUDA-graph replay must write single-token steps into the tensors
    it already holds (a captured graph keeps reading and writing those)."""
    mixer = build(sequence_entry)
    x = _input(sequence_entry.test_config(), 2, 6)
    _, cache = feed(mixer, x[:, :5], [0, 5])
    layer = cache.layers[0]
    if not type(layer).supports_graph_replay:
        pytest.skip(f"{type(layer).__name__} is not served by graph replay")
    before = {n: t.data_ptr() for n, t in layer.state_tensors().items()}
    run(mixer, x[:, 5:], position_ids=torch.full((2, 1), 5), cache_layer=layer)
    assert {n: t.data_ptr() for n, t in layer.state_tensors().items()} == before


def test_left_padding_is_invisible(sequence_entry):
    mixer = build(sequence_entry)
    config = sequence_entry.test_config()
    x = _input(config, 1, 9)
    junk = 5 * _input(config, 1, 4, seed=7)
    padded = torch.cat([junk, x], dim=1)
    mask = torch.cat([torch.zeros(1, 4), torch.ones(1, 9)], dim=1).long()
    ref = run(mixer, x, position_ids=torch.arange(9)[None])
    out = run(mixer, padded, attention_mask=mask, position_ids=positions(mask))[:, 4:]
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    # ... also when the padded prompt is prefilled and the rest is decoded token by token.
    prefix = getattr(mixer, "noncausal_prefix_length", 0)
    cuts = first_call_covers_prefix([0, 6, 7, 8, 9, 10, 11, 12, 13], 4 + prefix)
    stepped, _ = feed(mixer, padded, cuts, mask=mask)
    torch.testing.assert_close(stepped[:, 4:], ref, atol=ATOL, rtol=0)


def test_cache_layer_survives_batch_operations(sequence_entry):
    """Repeat (num_return_sequences), select and reorder (beam search) act on every batch
    state, so decoding continues as if each row had been run alone."""
    mixer = build(sequence_entry)
    config = sequence_entry.test_config()
    x = _input(config, 2, 10)
    nxt = _input(config, 4, 1, seed=5)
    _, cache = feed(mixer, x, [0, 10])
    layer = cache.layers[0]
    layer.batch_repeat_interleave(2)
    assert layer.batch_size == (4 if layer.batch_states else -1)
    pos = torch.full((4, 1), 10)
    got = run(mixer, nxt, position_ids=pos, cache_layer=layer)
    _, fresh = feed(mixer, x.repeat_interleave(2, 0), [0, 10])
    want = run(mixer, nxt, position_ids=pos, cache_layer=fresh.layers[0])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    _, cache = feed(mixer, x, [0, 10])
    cache.layers[0].reorder_cache(torch.tensor([1, 0]))
    swapped = run(mixer, nxt[:2], position_ids=pos[:2], cache_layer=cache.layers[0])
    _, straight = feed(mixer, x.flip(0), [0, 10])
    expected = run(mixer, nxt[:2], position_ids=pos[:2], cache_layer=straight.layers[0])
    torch.testing.assert_close(swapped, expected, atol=ATOL, rtol=0)
    assert set(layer.state_tensors()) >= set(layer.batch_state_tensors())


def test_channel_mixer_acts_on_each_position_alone(channel_entry):
    mixer = build(channel_entry)
    assert isinstance(mixer, ChannelMixer)
    x = _input(channel_entry.test_config(), 2, 7)
    whole = run(mixer, x)
    assert whole.shape == x.shape
    for t in (0, 3, 6):
        torch.testing.assert_close(
            run(mixer, x[:, t : t + 1]), whole[:, t : t + 1], atol=ATOL, rtol=0
        )
    torch.testing.assert_close(run(mixer, x[1:]), whole[1:], atol=ATOL, rtol=0)


def test_moe_returns_a_load_balancing_loss_in_training():
    entry = CHANNEL_MIXERS["moe"]
    config = entry.test_config()
    mixer = build(entry).train()
    x = _input(config, 2, 16)
    mask = torch.ones(2, 16)
    mask[1, :5] = 0  # padding is neither counted nor routed differently
    out = mixer(x, attention_mask=mask)
    assert isinstance(out, MixerOutput) and out.aux_loss is not None
    with torch.no_grad():
        real = x[mask.bool()]
        probs = mixer.router(real).softmax(-1)
        chosen = probs.topk(config.num_experts_per_tok, dim=-1).indices
        counts = torch.stack([(chosen == e).sum() for e in range(config.num_experts)]).float()
        fraction = counts / (real.shape[0] * config.num_experts_per_tok)
        expected = (
            config.router_aux_loss_coef * config.num_experts * (fraction * probs.mean(0)).sum()
        )
    torch.testing.assert_close(out.aux_loss.detach(), expected, atol=1e-6, rtol=1e-5)
    out.aux_loss.backward()
    assert mixer.router.weight.grad is not None and mixer.router.weight.grad.abs().sum() > 0
    assert mixer.eval()(x).aux_loss is None
