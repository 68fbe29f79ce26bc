"""KimiDeltaAttention on its own: cache, padding, gradients, autocast, configuration errors."""

from __future__ import annotations

import pytest
import torch
from nn_test_utils import rel_err

from kdalib.nn import KDACache, KimiDeltaAttention
from kdalib.ops import OPERATORS

HIDDEN = 32


@pytest.mark.parametrize("mode", ["auto", *(name for name, op in OPERATORS.items() if op.supports("cpu"))])
@pytest.mark.parametrize("lower_bound", [None, -5.0], ids=["softplus", "lower-bound"])
@pytest.mark.parametrize("split", [1, 3, 6], ids=lambda s: f"prefill{s}")
def test_prefill_then_decode_matches_full_pass(make_layer, mode, lower_bound, split):
    layer = make_layer(mode=mode, lower_bound=lower_bound)
    x = torch.randn(2, 9, HIDDEN)
    with torch.no_grad():
        full = layer(x)
        cache = KDACache()
        pieces = [layer(x[:, :split], cache=cache)]
        pieces += [layer(x[:, t : t + 1], cache=cache) for t in range(split, x.shape[1])]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.seen_tokens(0) == x.shape[1]


def test_cache_holds_three_conv_states_and_fp32_state(make_layer):
    layer = make_layer(conv_size=4)
    cache = KDACache()
    with torch.no_grad():
        layer(torch.randn(3, 5, HIDDEN), cache=cache)
    state = cache.get(0)
    assert [tuple(t.shape) for t in (state.q_conv, state.k_conv, state.v_conv)] == [(3, 16, 3)] * 3
    assert tuple(state.recurrent.shape) == (3, 2, 8, 8) and state.recurrent.dtype == torch.float32
    assert cache.nbytes() == 3 * (3 * 16 * 3 * 4 + 2 * 8 * 8 * 4)


def test_multi_token_continuation_matches_full_pass(make_layer):
    """Chunked prefill: several multi-token calls on one cache."""
    layer = make_layer()
    x = torch.randn(2, 12, HIDDEN)
    with torch.no_grad():
        cache = KDACache()
        pieces = [layer(x[:, a:b], cache=cache) for a, b in ((0, 2), (2, 7), (7, 12))]
        torch.testing.assert_close(torch.cat(pieces, dim=1), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right", "holes"])
def test_padded_batch_equals_each_sequence_alone(make_layer, side):
    layer = make_layer()
    lengths = [7, 3, 1, 5]
    total = 8
    x = torch.randn(len(lengths), total, HIDDEN)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, length in enumerate(lengths):
        if side == "left":
            mask[row, total - length :] = 1
        elif side == "right":
            mask[row, :length] = 1
        else:  # tokens at scattered positions: pads in the middle are skipped as well
            mask[row, torch.randperm(total)[:length].sort().values] = 1
    with torch.no_grad():
        cache = KDACache()
        batched = layer(x, attention_mask=mask, cache=cache)
        next_tokens = torch.randn(len(lengths), 1, HIDDEN)
        batched_next = layer(next_tokens, cache=cache)
        for row in range(len(lengths)):
            alone_cache = KDACache()
            tokens = x[row : row + 1, mask[row].bool()]
            alone = layer(tokens, cache=alone_cache)
            torch.testing.assert_close(batched[row, mask[row].bool()], alone[0], rtol=1e-5, atol=1e-5)
            pads = ~mask[row].bool()  # every length is below `total`, so every row has pads
            assert pads.any() and batched[row, pads].abs().max().item() == 0
            alone_next = layer(next_tokens[row : row + 1], cache=alone_cache)
            torch.testing.assert_close(batched_next[row], alone_next[0], rtol=1e-5, atol=1e-5)


def test_fully_padded_row_keeps_its_state(make_layer):
    layer = make_layer()
    x = torch.randn(2, 4, HIDDEN)
    with torch.no_grad():
        cache = KDACache()
        layer(x, cache=cache)
        before = cache.get(0).recurrent.clone()
        mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
        out = layer(torch.randn(2, 4, HIDDEN), attention_mask=mask, cache=cache)
    assert out[1].abs().max().item() == 0
    torch.testing.assert_close(cache.get(0).recurrent[1], before[1], rtol=0, atol=0)
    assert not torch.equal(cache.get(0).recurrent[0], before[0])


def test_all_padding_call_changes_nothing(make_layer):
    layer = make_layer()
    with torch.no_grad():
        cache = KDACache()
        layer(torch.randn(2, 3, HIDDEN), cache=cache)
        before = [t.clone() for t in cache.get(0).tensors()]
        out = layer(torch.randn(2, 2, HIDDEN), attention_mask=torch.zeros(2, 2, dtype=torch.long), cache=cache)
    assert out.shape == (2, 2, HIDDEN) and out.abs().max().item() == 0
    for old, new in zip(before, cache.get(0).tensors()):
        assert torch.equal(old, new)
    fresh = KDACache()
    with torch.no_grad():
        layer(torch.randn(2, 2, HIDDEN), attention_mask=torch.zeros(2, 2, dtype=torch.long), cache=fresh)
        x = torch.randn(2, 3, HIDDEN)
        torch.testing.assert_close(layer(x, cache=fresh), layer(x), rtol=1e-6, atol=1e-6)


def test_packed_cu_seqlens_equals_padded_mask(make_layer):
    layer = make_layer()
    lengths = [4, 2, 5]
    sequences = [torch.randn(n, HIDDEN) for n in lengths]
    cu_seqlens = torch.tensor([0, 4, 6, 11])
    with torch.no_grad():
        packed = layer(torch.cat(sequences)[None], cu_seqlens=cu_seqlens)
        for sequence, start in zip(sequences, cu_seqlens[:-1].tolist()):
            alone = layer(sequence[None])[0]
            torch.testing.assert_close(packed[0, start : start + len(sequence)], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", [name for name, op in OPERATORS.items() if op.supports("cpu")])
def test_packed_offsets_are_read_to_the_host_once(make_layer, monkeypatch, mode):
    """The layer validates cu_seqlens and every operator below it reuses the validated offsets."""
    layer = make_layer(mode=mode)
    cu_seqlens = torch.tensor([0, 4, 6, 11])
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t is cu_seqlens) or tolist(t))
    with torch.no_grad():
        layer(torch.randn(1, 11, HIDDEN), cu_seqlens=cu_seqlens, cache=KDACache())
    assert reads.count(True) == 1


def test_a_masked_batch_is_packed_once_and_its_recurrence_runs_padded(make_layer, monkeypatch):
    """One packing (for the convolutions); the operator gets the padded batch with zeroed pads."""
    import kdalib.nn.layer as layer_module
    from kdalib import ops

    layer = make_layer()
    packings, calls = [], []
    pack, kda = layer_module.pack, ops.kda
    monkeypatch.setattr(layer_module, "pack", lambda *a: packings.append(1) or pack(*a))
    monkeypatch.setattr(ops, "kda", lambda *a, **kw: calls.append((a[0], kw["cu_seqlens"])) or kda(*a, **kw))
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1]])
    with torch.no_grad():
        layer(torch.randn(3, 4, HIDDEN), attention_mask=mask)
    ((q, cu_seqlens),) = calls
    assert len(packings) == 1 and cu_seqlens is None and q.shape[:2] == (3, 4)
    assert q[~mask.bool()].abs().max().item() == 0


def test_packed_prefill_then_batched_decode(make_layer):
    """A cache filled from N packed sequences continues as a batch of N rows."""
    layer = make_layer(mode="auto")
    lengths = [3, 6, 1]
    sequences = [torch.randn(n, HIDDEN) for n in lengths]
    steps = torch.randn(len(lengths), 2, HIDDEN)
    with torch.no_grad():
        cache = KDACache()
        layer(torch.cat(sequences)[None], cu_seqlens=torch.tensor([0, 3, 9, 10]), cache=cache)
        decoded = torch.cat([layer(steps[:, t : t + 1], cache=cache) for t in range(2)], dim=1)
        for row, sequence in enumerate(sequences):
            alone = layer(torch.cat([sequence, steps[row]])[None])[0, -2:]
            torch.testing.assert_close(decoded[row], alone, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter(make_layer):
    layer = make_layer(mode="auto")
    x = torch.randn(2, 6, HIDDEN, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    layer(x, attention_mask=mask).square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name}: non-finite gradient"
        assert parameter.grad.abs().max() > 0, f"{name}: zero gradient"
    assert x.grad[1, :2].abs().max() == 0, "padding tokens must not influence the output"


def test_gradient_matches_finite_differences(make_layer):
    layer = make_layer().double()
    x = torch.randn(1, 4, HIDDEN, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_bf16_autocast_on_cpu(make_layer):
    layer = make_layer(mode="auto")
    x = torch.randn(2, 10, HIDDEN)
    with torch.no_grad():
        reference = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache = KDACache()
        prefill = layer(x[:, :7], cache=cache)
        decoded = [layer(x[:, t : t + 1], cache=cache) for t in range(7, 10)]
        out = layer(x)
    assert out.dtype == torch.bfloat16
    assert cache.get(0).recurrent.dtype == torch.float32
    assert rel_err(out, reference) < 3e-2
    assert rel_err(torch.cat([prefill, *decoded], dim=1), reference) < 3e-2
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_bfloat16_parameters_run(make_layer):
    layer = make_layer()
    x = torch.randn(1, 5, HIDDEN)
    with torch.no_grad():
        reference = layer(x)
        low = layer.to(torch.bfloat16)(x.bfloat16())
    assert low.dtype == torch.bfloat16 and rel_err(low, reference) < 3e-2


def test_lower_bound_form_changes_only_the_gate(make_layer):
    softplus, bounded = make_layer(seed=1), make_layer(seed=1, lower_bound=-5.0)
    bounded.load_state_dict(softplus.state_dict())
    x = torch.randn(1, 6, HIDDEN)
    with torch.no_grad():
        assert not torch.allclose(softplus(x), bounded(x))


def test_cache_reorder_selects_sequences(make_layer):
    layer = make_layer()
    x = torch.randn(3, 5, HIDDEN)
    with torch.no_grad():
        cache = KDACache()
        layer(x, cache=cache)
        cache.reorder(torch.tensor([2, 0]))
        step = torch.randn(2, 1, HIDDEN)
        out = layer(step, cache=cache)
        expected_cache = KDACache()
        layer(x[[2, 0]], cache=expected_cache)
        torch.testing.assert_close(out, layer(step, cache=expected_cache), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(head_dim=0), "head_dim must be a positive int"),
        (dict(head_dim=8.0), "head_dim must be a positive int"),
        (dict(num_heads=-2), "num_heads must be a positive int"),
        (dict(conv_size=0), "conv_size must be a positive int"),
        (dict(lower_bound=0.0), "lower_bound must be negative"),
        (dict(lower_bound=3), "lower_bound must be negative"),
        (dict(lower_bound=float("-inf")), "finite negative number"),
        (dict(norm_eps=0), "norm_eps must be a positive number"),
        (dict(mode="no-such-operator"), "mode must be one of"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v[k]}" for k in v),
)
def test_bad_config_raises(kwargs, message):
    options = dict(hidden_size=HIDDEN, num_heads=2, head_dim=8)
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        KimiDeltaAttention(**options)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda layer: layer(torch.randn(2, 3, HIDDEN + 1)), r"hidden_states: expected shape \[B, T, 32\]"),
        (lambda layer: layer(torch.randn(2, 3, HIDDEN), attention_mask=torch.ones(2, 4)), "attention_mask"),
        (lambda layer: layer(torch.randn(2, 3, HIDDEN), attention_mask=torch.full((2, 3), 2)), "only 0"),
        (
            lambda layer: layer(
                torch.randn(1, 3, HIDDEN),
                attention_mask=torch.ones(1, 3, dtype=torch.long),
                cu_seqlens=torch.tensor([0, 3]),
            ),
            "exclusive",
        ),
    ],
    ids=["hidden-size", "mask-shape", "mask-values", "mask-and-cu_seqlens"],
)
def test_bad_input_raises(make_layer, call, message):
    with pytest.raises(ValueError, match=message):
        call(make_layer())


def test_cache_batch_mismatch_raises(make_layer):
    layer = make_layer()
    cache = KDACache()
    with torch.no_grad():
        layer(torch.randn(2, 3, HIDDEN), cache=cache)
        with pytest.raises(ValueError, match="holds 2 sequences, the input has 3"):
            layer(torch.randn(3, 1, HIDDEN), cache=cache)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(make_layer):
    layer = make_layer(mode="auto")
    x = torch.randn(2, 80, HIDDEN)
    mask = torch.ones(2, 80, dtype=torch.long)
    mask[1, :30] = 0
    with torch.no_grad():
        expected = layer(x, attention_mask=mask)
        cuda_layer = layer.to("cuda")
        cache = KDACache()
        prefill = cuda_layer(x[:, :70].cuda(), attention_mask=mask[:, :70].cuda(), cache=cache)
        decode = [cuda_layer(x[:, t : t + 1].cuda(), cache=cache) for t in range(70, 80)]
    actual = torch.cat([prefill, *decode], dim=1).cpu()
    assert rel_err(actual[mask.bool()], expected[mask.bool()]) < 1e-4
