"""The token-layout training path (kdalib.ops.triton.training) in Triton's CPU interpreter.

* The chunk-local kernel in the backward's chunk layout and the three backward kernels, in float64,
  against the PyTorch chunk form (exact to rounding): packed sequences that start and end inside
  chunks, shared key heads (GVA), the in-kernel L2 norm, mild, strong, Kimi and g = -1000 gates.
* Gates at -inf and above 0: finite, and what the clamp says.
* 16-bit inputs end to end against float64 autograd of the token loop.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from kda_test_utils import INPUT_NAMES, kernel_inputs, packed_inputs, rel_rms, run_with_grads  # noqa: E402

from kdalib.ops import chunk_kda, kda_gate, naive_recurrent_kda  # noqa: E402
from kdalib.ops._validate import validate_call  # noqa: E402
from kdalib.ops.chunk import chunk_local_terms_and_factors, chunk_rows  # noqa: E402
from kdalib.ops.triton.chunk import ChunkTable, launch_chunk_local, triton_chunk_kda  # noqa: E402
from kdalib.ops.triton.runtime import CHUNK  # noqa: E402
from kdalib.ops.triton.training import chunk_kda_backward  # noqa: E402
from kdalib.ops.triton.training import chunk_kda_training as _CHUNK_KDA_TRAINING  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LENGTHS = [1, 63, 64, 65, 130]
# the training tests' bar for 16-bit inputs (relative RMS against float64)
HALF_TOLERANCE = 1e-2
GATES = {"mild": "logsigmoid", "strong": -6.0, "kimi-A200": "kimi", "g-1000": -1000.0}


def _problem(gate, lengths=LENGTHS, heads=1, value_heads=2, key_dim=20, value_dim=24, dtype=torch.float64):
    inputs, cu_seqlens = packed_inputs(
        lengths, gate, dtype, DEVICE, heads=heads, value_heads=value_heads, key_dim=key_dim, value_dim=value_dim
    )
    if dtype == torch.float64:
        inputs["initial_state"] = inputs["initial_state"].double()
    return inputs, cu_seqlens


def _by_chunk(x: torch.Tensor, lengths, value_heads: int) -> torch.Tensor:
    """``[NC, N * HV, ...]`` (the PyTorch chunk form's rows) -> ``[chunks, HV, ...]`` (every
    sequence's own chunks in order, as the Triton chunk table lists them)."""
    parts = []
    for n, length in enumerate(lengths):
        for c in range(-(-length // CHUNK)):
            parts.append(x[c, n * value_heads : (n + 1) * value_heads])
    return torch.stack(parts)


def _local_terms(tensors, table, scale, l2norm, gate):
    """The chunk-local kernel's full run in the chunk layout (float64, IEEE products):
    ``(scores, inverse, A_kk, norms)``, as the forward keeps them for the backward, and the terms
    ``[W, U, Q_in, K_out, exp(G_L)]``."""
    q, k, v = tensors[:3]
    chunks, heads_v, key_dim, value_dim = table.count, v.shape[2], k.shape[3], v.shape[3]
    terms = [q.new_empty(chunks, heads_v, CHUNK, key_dim), q.new_empty(chunks, heads_v, CHUNK, value_dim)]
    terms += [q.new_empty(chunks, heads_v, CHUNK, key_dim) for _ in range(2)] + [q.new_empty(chunks, heads_v, key_dim)]
    square = [q.new_empty(chunks, heads_v, CHUNK, CHUNK) for _ in range(3)]
    norms = launch_chunk_local(tensors, (*terms, *square), table, scale, gate, l2norm, "ieee", as_chunks=True)
    return (*square, norms), terms


@pytest.mark.parametrize("l2norm", [False, True], ids=["plain", "l2norm"])
@pytest.mark.parametrize("gate", list(GATES.values()), ids=list(GATES))
def test_local_terms_in_the_chunk_layout_match_the_pytorch_chunk_form(gate, l2norm):
    inputs, cu_seqlens = _problem(gate)
    q, k, v, g, beta = (inputs[name] for name in ("q", "k", "v", "g", "beta"))
    heads_v = v.shape[2]
    table = ChunkTable.of(1, q.shape[1], cu_seqlens)
    (scores, inverse, scores_kk, _), (w, u, qg, kg, decay) = _local_terms(
        (q, k, v, g, beta), table, 1.0, l2norm, (None, None, None)
    )

    call = validate_call(q, k, v, g, beta, 1.0, None, False, l2norm, cu_seqlens, CHUNK)
    rows = chunk_rows(call, CHUNK)
    terms, inverse_ref, scores_kk_ref = chunk_local_terms_and_factors(rows.q, rows.k, rows.v, rows.g, rows.beta)
    w_ref, u_ref, kg_ref, decay_ref, qg_ref, scores_ref = terms
    expected = {
        "w": (w, w_ref),
        "u": (u, u_ref),
        "k_out": (kg, kg_ref),
        "decay": (decay, decay_ref.squeeze(-1)),
        "q_in": (qg, qg_ref),
        "scores": (scores, scores_ref),
        "inverse": (inverse.tril(), inverse_ref.tril()),
        "scores_kk": (scores_kk, scores_kk_ref),
    }
    for name, (mine, theirs) in expected.items():
        assert rel_rms(mine, _by_chunk(theirs, LENGTHS, heads_v)) < 1e-12, name


def _entering_states(inputs, cu_seqlens, lengths, **kwargs) -> torch.Tensor:
    """The state entering every chunk of every sequence, ``[chunks, HV, K, V]``, from the PyTorch
    chunk form's boundary states (float64)."""
    with torch.no_grad():
        _, _, boundary = chunk_kda(
            **inputs, cu_seqlens=cu_seqlens, use_triton=False, output_states_every=CHUNK, **kwargs
        )
    states, at = [], 0
    for n, length in enumerate(lengths):
        chunks = -(-length // CHUNK)
        states += [inputs["initial_state"][n]] + [boundary[at + c] for c in range(chunks - 1)]
        at += length // CHUNK
    return torch.stack(states)


def _kernel_grads(
    inputs, cu_seqlens, lengths, scale, l2norm, seed=1, gate=(None, None, None), warps=8, kept=False, **launch
):  # fmt: skip
    """Gradients from :func:`chunk_kda_backward` (float64, IEEE products) for the cotangents that
    :func:`run_with_grads` draws (``gate``: ``inputs["g"]`` is the raw projection of that gate;
    ``kept``: from the scores that the forward keeps, the terms alone computed again)."""
    decayed = inputs if gate[0] is None else dict(inputs, g=kda_gate(inputs["g"], *gate))
    states = _entering_states(decayed, cu_seqlens, lengths, scale=scale, use_qk_l2norm_in_kernel=l2norm)
    o, final = chunk_kda(
        **decayed, scale=scale, cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=l2norm, output_final_state=True,
        use_triton=False,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    d_out = torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o)
    d_final = torch.randn(final.shape, generator=generator, dtype=torch.float64).to(final)
    tensors = tuple(inputs[name].contiguous() for name in ("q", "k", "v", "g", "beta"))
    table = ChunkTable.of(1, tensors[0].shape[1], cu_seqlens)
    grads = chunk_kda_backward(
        tensors,
        states,
        d_out,
        d_final,
        table,
        scale,
        cu_seqlens,
        l2norm,
        True,
        "ieee",
        gate,
        local_backward_warps=warps,
        **launch,
        local_scores=_local_terms(tensors, table, scale, l2norm, gate)[0] if kept else None,
    )
    return dict(zip((*INPUT_NAMES, "A_log", "dt_bias"), grads))


@pytest.mark.parametrize(
    "gate,l2norm,heads",
    [("logsigmoid", False, 1), ("logsigmoid", True, 2), (-6.0, True, 1), ("kimi", False, 1), (-1000.0, True, 1)],
    ids=["mild-GVA", "mild-l2norm", "strong-l2norm-GVA", "kimi-A200-GVA", "g-1000-l2norm-GVA"],
)
def test_backward_kernels_match_float64_autograd_of_the_chunk_form(gate, l2norm, heads):
    """The recomputed terms, the reverse pass, the chunk-parallel gradients and the local backward
    with its L2-norm and clamp epilogue, against autograd of the PyTorch chunk form."""
    inputs, cu_seqlens = _problem(gate, heads=heads, value_heads=2)
    scale = 20**-0.5
    grads = _kernel_grads(inputs, cu_seqlens, LENGTHS, scale, l2norm)
    _, _, grads_ref = run_with_grads(
        lambda **kw: chunk_kda(**kw, use_triton=False),
        inputs,
        scale=scale,
        cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=l2norm,
    )
    for name in INPUT_NAMES:
        mine, theirs = grads[name], grads_ref[name]
        assert torch.isfinite(mine).all(), name
        assert rel_rms(mine, theirs) < 1e-10, name


@pytest.mark.parametrize("strong", [-6.0, -12.0, "uneven"], ids=["span-96-middle", "span-192-levels", "uneven-levels"])
def test_strong_channels_beside_mild_ones_in_the_backward(strong):
    """One channel decays strongly (its span picks how every diagonal block is built: about its
    middle row, or by levels of row segments) while the others barely decay, so the gradients far
    below the diagonal carry full weight through them; ``uneven``: gates drawn from [-25, 0] token
    by token in most channels, so the segments of every level decay unevenly."""
    inputs, cu_seqlens = _problem("logsigmoid", heads=1, value_heads=2)
    g = inputs["g"]
    if strong == "uneven":
        g[..., 4:] = -25.0 * torch.rand(g[..., 4:].shape, generator=torch.Generator().manual_seed(3), dtype=g.dtype)
        g[..., :4] = -0.05
    else:
        g[...] = -0.05
        g[..., 0] = strong
    scale = 20**-0.5
    grads = _kernel_grads(inputs, cu_seqlens, LENGTHS, scale, True)
    _, _, grads_ref = run_with_grads(
        lambda **kw: chunk_kda(**kw, use_triton=False), inputs, scale=scale, cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    for name in INPUT_NAMES:
        assert rel_rms(grads[name], grads_ref[name]) < 1e-10, name


def _raw_gate(value_heads: int, key_dim: int, dtype=torch.float64, device=DEVICE):
    """``(A_log, dt_bias)`` with rates exp(A_log) from 1 to 20 over the heads."""
    generator = torch.Generator().manual_seed(11)
    a_log = torch.linspace(0.0, 3.0, value_heads, dtype=torch.float64)
    dt_bias = torch.randn(value_heads * key_dim, generator=generator, dtype=torch.float64)
    return a_log.to(device, dtype), dt_bias.to(device, dtype)


@pytest.mark.parametrize("lower_bound", [None, -5.0], ids=["softplus", "bounded"])
def test_backward_kernels_take_the_gate_from_its_raw_projection(lower_bound):
    """The log decay computed in the kernels from the raw projection: gradients of g_raw, A_log and
    dt_bias against autograd of kda_gate and the PyTorch chunk form."""
    inputs, cu_seqlens = _problem("logsigmoid")
    inputs["g"] = torch.randn(inputs["g"].shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a_log, dt_bias = _raw_gate(inputs["v"].shape[2], inputs["k"].shape[3])
    scale = 20**-0.5
    grads = _kernel_grads(inputs, cu_seqlens, LENGTHS, scale, True, gate=(a_log, dt_bias, lower_bound))
    leaves = {name: x.clone().requires_grad_(True) for name, x in dict(inputs, A_log=a_log, dt_bias=dt_bias).items()}

    def gated(A_log, dt_bias, g, **kw):
        return chunk_kda(g=kda_gate(g, A_log, dt_bias, lower_bound), **kw, use_triton=False)

    _, _, grads_ref = run_with_grads(
        lambda **kw: gated(leaves["A_log"], leaves["dt_bias"], **kw),
        inputs,
        scale=scale,
        cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=True,
    )
    grads_ref = dict(grads_ref, A_log=leaves["A_log"].grad, dt_bias=leaves["dt_bias"].grad)
    for name, theirs in grads_ref.items():
        assert torch.isfinite(grads[name]).all(), name
        assert rel_rms(grads[name], theirs) < 1e-10, name


@pytest.mark.parametrize(
    "gate,lower_bound", [("kimi", None), (-1000.0, None), ("raw", -5.0)], ids=["kimi-A200", "g-1000", "bounded-raw"]
)
def test_the_local_backward_in_three_launches_is_the_one_launch_result(gate, lower_bound):
    """``local_backward_warps=(a, b, c)``: the stages of the local backward as three launches, the
    scores' gradients with one program per 16-row block, give the one launch's gradients bit for
    bit (both kinds of diagonal block, packed sequences, shared key heads, the gate in the kernel)."""
    inputs, cu_seqlens = _problem("logsigmoid" if gate == "raw" else gate, heads=1, value_heads=2)
    parameters = (None, None, None)
    if gate == "raw":
        inputs["g"] = torch.randn(inputs["g"].shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        parameters = (*_raw_gate(inputs["v"].shape[2], inputs["k"].shape[3]), lower_bound)
    one = _kernel_grads(inputs, cu_seqlens, LENGTHS, 20**-0.5, True, gate=parameters)
    three = _kernel_grads(inputs, cu_seqlens, LENGTHS, 20**-0.5, True, gate=parameters, warps=(8, 4, 4))
    for name, grad in one.items():
        if grad is not None:
            assert torch.equal(grad, three[name]), name
    with pytest.raises(ValueError, match="local_backward_warps"):
        _kernel_grads(inputs, cu_seqlens, LENGTHS, 20**-0.5, True, gate=parameters, warps=(8, 4))


def test_the_chunk_gradients_in_wider_value_steps_give_the_same_gradients():
    """``chunk_grads_launch``: the chunk-gradient kernel walking the value columns 32 at a time
    (one step over V = 24) instead of 16 gives the same gradients to float64 rounding (only the
    order of the value sums changes; warps and stages do not reach the interpreter); malformed
    launches, and pipelined ones at head sizes not checked on the GPU, are refused before anything
    runs."""
    inputs, cu_seqlens = _problem("kimi", heads=1, value_heads=2)
    default = _kernel_grads(inputs, cu_seqlens, LENGTHS, 20**-0.5, True)
    wider = _kernel_grads(inputs, cu_seqlens, LENGTHS, 20**-0.5, True, chunk_grads_launch=(32, 8, 1))
    for name, grad in default.items():
        if grad is not None:
            assert rel_rms(wider[name], grad) < 1e-13, name
    # (16, 8, 2): pipelined at K = 20, V = 24, a head size never checked on the GPU
    for bad in ((24, 8, 1), (16, 3, 1), (16, 8, 0), (16, 8), [16, 8, 1], (16, 8, 2)):
        with pytest.raises(ValueError, match="chunk_grads_launch"):
            _kernel_grads(inputs, cu_seqlens, LENGTHS, 20**-0.5, True, chunk_grads_launch=bad)


def test_chunk_grads_launch_pipelines_only_the_head_sizes_checked_on_the_gpu():
    """Each form of the chunk-gradient kernel is pipelined only at the head sizes where its GPU
    gradients were checked: the form that forms V_new again at (64, 128), (128, 64) and (128, 128)
    (K = V = 64 miscompiles), the one reading the forward's V_new at (128, 128) alone (it
    miscompiles at (64, 128) and (128, 64); NOTES.md, training v5.2 and v5.5); asking for stages
    elsewhere is refused, naming the form."""
    from kdalib.ops.triton.training import _checked_grads_launch, chunk_grads_launch_for, pipelined_grads_heads

    assert pipelined_grads_heads(False) == {(64, 128), (128, 64), (128, 128)}
    assert pipelined_grads_heads(True) == {(128, 128)}
    for kept in (False, True):
        for K, V in pipelined_grads_heads(kept):
            assert chunk_grads_launch_for(K, V, kept) == (16, 8, 3)
            assert _checked_grads_launch((16, 8, 3), K, V, kept) == (16, 8, 3)
        for K, V in ((64, 64), (32, 32), (16, 128), (256, 128), (128, 256)):
            assert chunk_grads_launch_for(K, V, kept) == (16, 8, 1), (K, V)
    for K, V in ((64, 128), (128, 64)):
        assert chunk_grads_launch_for(K, V, True) == (16, 8, 1)
        with pytest.raises(ValueError, match="chunk_grads_launch: 3 pipeline stages at K = .*reading the forward"):
            _checked_grads_launch((16, 8, 3), K, V, True)
    # the backward asks for the kept form's rule when given the forward's terms, before anything runs
    keys, values = torch.zeros(1, 1, 1, 64, dtype=torch.bfloat16), torch.zeros(1, 1, 1, 128, dtype=torch.bfloat16)
    inputs = (keys, keys, values, keys.float(), torch.zeros(1, 1, 1, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="pipeline stages at K = 64, V = 128: the kernel reading the forward's V_new"):
        chunk_kda_backward(
            inputs, None, None, None, ChunkTable.of(1, 1, None), 1.0, None, False, False, "tf32",
            chunk_grads_launch=(16, 8, 3), local_terms=(),
        )  # fmt: skip


KEPT_CASES = [("logsigmoid", None, False), ("kimi", None, True), (-1000.0, None, True), ("raw", -5.0, True)]
KEPT_IDS = ["mild", "kimi-A200-l2norm", "g-1000-l2norm", "bounded-raw-l2norm"]


def _kept_problem(gate, lower_bound):
    inputs, cu_seqlens = _problem("logsigmoid" if gate == "raw" else gate, heads=1, value_heads=2)
    parameters = (None, None, None)
    if gate == "raw":
        inputs["g"] = torch.randn(inputs["g"].shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        parameters = (*_raw_gate(inputs["v"].shape[2], inputs["k"].shape[3]), lower_bound)
    return inputs, cu_seqlens, parameters


@pytest.mark.parametrize("gate,lower_bound,l2norm", KEPT_CASES, ids=KEPT_IDS)
def test_the_terms_alone_from_kept_scores_are_the_full_runs_terms(gate, lower_bound, l2norm):
    """``launch_chunk_local(terms_only=True)`` from the scores, inverse and norms of a full run
    writes that run's W, U, Q_in, K_out and exp(G_L) bit for bit (strong diagonal blocks, packed
    sequences, the gate in the kernel), and without the norms it needs it refuses to run."""
    inputs, cu_seqlens, parameters = _kept_problem(gate, lower_bound)
    tensors = tuple(inputs[name].contiguous() for name in ("q", "k", "v", "g", "beta"))
    table = ChunkTable.of(1, tensors[0].shape[1], cu_seqlens)
    scale = 20**-0.5
    (scores, inverse, scores_kk, norms), full = _local_terms(tensors, table, scale, l2norm, parameters)
    assert (norms is not None) == l2norm
    again = [torch.full_like(x, float("nan")) for x in full]
    kept = [x.clone() for x in (scores, inverse, scores_kk)]
    returned = launch_chunk_local(
        tensors, (*again, scores, inverse, scores_kk), table, scale, parameters, l2norm, "ieee", as_chunks=True,
        terms_only=True, norms=norms,
    )  # fmt: skip
    assert returned is norms
    for name, mine, theirs in zip(("w", "u", "q_in", "k_out", "decay"), again, full):
        assert torch.equal(mine, theirs), name
    for mine, theirs in zip((scores, inverse, scores_kk), kept):
        assert torch.equal(mine, theirs)  # read, not written
    if l2norm:
        with pytest.raises(ValueError, match="norms"):
            launch_chunk_local(
                tensors, (*again, scores, inverse, scores_kk), table, scale, parameters, True, "ieee",
                as_chunks=True, terms_only=True,
            )  # fmt: skip


@pytest.mark.parametrize("gate,lower_bound,l2norm", KEPT_CASES, ids=KEPT_IDS)
def test_the_backward_from_kept_scores_matches_float64_autograd(gate, lower_bound, l2norm):
    """``chunk_kda_backward(local_scores=...)``: the scores the forward kept carry the scale, the
    reverse pass meets them with the unscaled dO, and every gradient is the recomputing backward's
    to rounding (float64, packed sequences, shared key heads, the gate in the kernel)."""
    inputs, cu_seqlens, parameters = _kept_problem(gate, lower_bound)
    scale = 20**-0.5
    recomputed = _kernel_grads(inputs, cu_seqlens, LENGTHS, scale, l2norm, gate=parameters, warps=(8, 4, 4))
    kept = _kernel_grads(inputs, cu_seqlens, LENGTHS, scale, l2norm, gate=parameters, warps=(8, 4, 4), kept=True)
    for name, grad in recomputed.items():
        if grad is not None:
            assert torch.isfinite(kept[name]).all(), name
            assert rel_rms(kept[name], grad) < 1e-12, name


def test_kept_scores_of_the_wrong_shape_or_dtype_are_refused():
    inputs, cu_seqlens, parameters = _kept_problem("logsigmoid", None)
    tensors = tuple(inputs[name].contiguous() for name in ("q", "k", "v", "g", "beta"))
    table = ChunkTable.of(1, tensors[0].shape[1], cu_seqlens)
    (scores, inverse, scores_kk, norms), _ = _local_terms(tensors, table, 0.5, False, parameters)
    states = torch.zeros(table.count, 2, tensors[1].shape[3], tensors[2].shape[3], dtype=torch.float64)
    bad = [
        (False, (scores[:-1], inverse, scores_kk, norms), "scores"),
        (False, (scores, inverse.float(), scores_kk, norms), "inverse"),
        (False, (scores, inverse, None, norms), "A_kk"),
        (True, (scores, inverse, scores_kk, None), "norms"),
    ]
    for l2norm, kept, name in bad:
        with pytest.raises(ValueError, match=f"local_scores: {name} must be"):
            chunk_kda_backward(
                tensors, states, None, None, table, 0.5, cu_seqlens, l2norm, False, "ieee", parameters,
                local_scores=kept,
            )  # fmt: skip
    with pytest.raises(ValueError, match="keep_local_scores"):
        triton_chunk_kda(*tensors, 0.5, keep_local_scores=True)


def test_kept_terms_that_do_not_fit_are_refused():
    """``local_terms`` only with kept scores and bfloat16 terms, each tensor as the forward keeps it;
    ``keep_local_terms`` only with kept scores and 16-bit inputs. Refused before anything runs."""
    inputs = kernel_inputs(torch.bfloat16, DEVICE, batch=1, tokens=70, heads=1, value_heads=2, key_dim=32, value_dim=16)
    tensors = tuple(inputs[name].contiguous() for name in ("q", "k", "v", "g", "beta"))
    table = ChunkTable.of(1, 70, None)
    _, _, states, scores, terms = triton_chunk_kda(
        *tensors, 0.5, keep_chunk_states=True, keep_local_scores=True, keep_local_terms=True
    )
    w, kg, qg, v_new, decay = terms
    assert w.shape == kg.shape == qg.shape == (70, 2, 32) and w.dtype == torch.bfloat16
    assert v_new.shape == (70, 2, 16) and v_new.dtype == decay.dtype == torch.float32 and decay.shape == (2, 2, 32)
    bad = [
        (None, terms, "only with local_scores"),
        (scores, terms[:4], "expected"),
        (scores, (w.float(), kg, qg, v_new, decay), "W must be"),
        (scores, (w, kg, qg[:-1], v_new, decay), "Q_in must be"),
        (scores, (w, kg, qg, v_new.to(torch.bfloat16), decay), "V_new must be"),
    ]
    for kept_scores, kept_terms, message in bad:
        with pytest.raises(ValueError, match=f"local_terms: .*{message}"):
            chunk_kda_backward(
                tensors, states, None, None, table, 0.5, None, False, False, "tf32", (None, None, None),
                local_scores=kept_scores, local_terms=kept_terms,
            )  # fmt: skip
    with pytest.raises(ValueError, match="local_terms: only with bfloat16"):
        chunk_kda_backward(
            tensors, states, None, None, table, 0.5, None, False, False, "tf32", (None, None, None),
            narrow_key_terms=False, local_scores=scores, local_terms=terms,
        )  # fmt: skip
    with pytest.raises(ValueError, match="keep_local_terms"):
        triton_chunk_kda(*tensors, 0.5, keep_chunk_states=True, keep_local_terms=True)
    wide = tuple(x.float() for x in tensors)
    with pytest.raises(ValueError, match="keep_local_terms"):
        triton_chunk_kda(*wide, 0.5, keep_chunk_states=True, keep_local_scores=True, keep_local_terms=True)


def _bf16_training(keep, monkeypatch, gate="kimi", retain=False, reference=False):
    """Gradients of chunk_kda's 16-bit training route (B2 T130, GVA, the in-kernel L2 norm), with
    what the forward keeps for the backward (``keep``: "states", "scores" or "terms"; None:
    chunk_kda's default), and which chunk-local launches the backward ran (``terms_only`` of each);
    ``reference``: float64 autograd of the token loop instead."""
    import functools

    import kdalib.ops.triton.training as training

    if keep is not None:
        kept = dict(keep_scores=keep != "states", keep_terms=keep == "terms")
        monkeypatch.setattr(training, "chunk_kda_training", functools.partial(_CHUNK_KDA_TRAINING, **kept))
    launches = []
    monkeypatch.setattr(
        training,
        "launch_chunk_local",
        lambda *a, **kw: launches.append(kw["terms_only"]) or launch_chunk_local(*a, **kw),
    )
    inputs = kernel_inputs(
        torch.bfloat16, DEVICE, batch=2, tokens=130, heads=2, value_heads=4, key_dim=32, value_dim=16, gate=gate
    )
    cast = torch.float64 if reference else None
    leaves = {name: x.detach().to(cast or x.dtype).requires_grad_(True) for name, x in inputs.items()}
    kda = naive_recurrent_kda if reference else functools.partial(chunk_kda, use_triton=True)
    o, final = kda(**leaves, scale=32**-0.5, use_qk_l2norm_in_kernel=True, output_final_state=True)
    weights = torch.Generator().manual_seed(1)
    d_out, d_final = (torch.randn(x.shape, generator=weights, dtype=torch.float64).to(x) for x in (o, final))
    loss = (o * d_out).sum() + (final * d_final).sum()
    rounds = []
    for _ in range(2 if retain else 1):
        loss.backward(retain_graph=retain)
        rounds.append({name: leaf.grad.clone() for name, leaf in leaves.items()})
        for leaf in leaves.values():
            leaf.grad = None
    return o.detach(), rounds, launches


@pytest.mark.parametrize("gate", ["logsigmoid", "kimi"], ids=["mild", "kimi-A200"])
@pytest.mark.parametrize("keep", ["scores", "terms"])
def test_16_bit_training_with_the_forwards_work_kept(gate, keep, monkeypatch):
    """``chunk_kda_training(keep_scores=True)`` and, chunk_kda's default, ``keep_terms=True`` as
    well: the same output bit for bit, a backward that computes only the terms again (kept scores)
    or nothing chunk-local (kept terms), and gradients as close to float64 autograd as the
    recomputing route's (they differ by bfloat16 roundings: Q_in is stored with the scale in it,
    and kept, V_new comes from the forward's float32 state instead of the kept bfloat16 one); a
    second backward (``retain_graph``) computes everything again and gives the recomputing route's
    gradients bit for bit (the first turned what was kept into gradients)."""
    _, (reference,), _ = _bf16_training("states", monkeypatch, gate, reference=True)
    o, (recomputed,), launches = _bf16_training("states", monkeypatch, gate)
    assert launches == [False]
    o_kept, (first, second), launches = _bf16_training(keep, monkeypatch, gate, retain=True)
    assert launches == ([True] if keep == "scores" else []) + [False]
    assert torch.equal(o_kept, o)
    if keep == "terms":
        _, (default,), launches = _bf16_training(None, monkeypatch, gate)
        assert launches == []  # chunk_kda keeps the terms by default
    for name, grad in recomputed.items():
        if keep == "terms":
            assert torch.equal(default[name], first[name]), name
        error, recomputed_error = rel_rms(first[name], reference[name]), rel_rms(grad, reference[name])
        assert error < HALF_TOLERANCE and error < 1.5 * recomputed_error, (name, error, recomputed_error)
        assert torch.equal(second[name], grad), name


@pytest.mark.parametrize("lower_bound", [None, -5.0], ids=["softplus", "bounded"])
def test_16_bit_training_with_the_gate_in_the_kernels(lower_bound, monkeypatch):
    """chunk_kda from the raw gate projection with gradients: the gate and its backward run in the
    kernels, and g_raw, A_log and dt_bias get the gradients of the route that computes the gate in
    PyTorch first (to 1e-4), within the 16-bit bar of float64 autograd. dA_log sums a chunk's
    gradients with cancellation, so its bfloat16 error (about 1.1e-2 for the bounded gate here,
    on either route) is held to that route's, not to the bar."""
    import kdalib.ops.triton.training as training

    inputs, cu_seqlens = packed_inputs([5, 70], "logsigmoid", torch.bfloat16, DEVICE, heads=1, value_heads=2)
    generator = torch.Generator().manual_seed(5)
    inputs["g"] = torch.randn(inputs["g"].shape, generator=generator).to(inputs["g"])
    a_log, dt_bias = _raw_gate(2, inputs["k"].shape[3], torch.float32)
    problem = dict(inputs, A_log=a_log, dt_bias=dt_bias)

    def grads(dtype, use_triton, in_kernel):
        leaves = {name: x.detach().to(dtype or x.dtype).requires_grad_(True) for name, x in problem.items()}
        tensors = dict(leaves)
        gate = (tensors.pop("A_log"), tensors.pop("dt_bias"), lower_bound)
        if in_kernel:
            tensors.update(A_log=gate[0], dt_bias=gate[1], lower_bound=lower_bound)
        else:
            tensors["g"] = kda_gate(tensors["g"], *gate)
        o, final = chunk_kda(
            **tensors, cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=True, output_final_state=True,
            use_triton=use_triton,
        )  # fmt: skip
        weights = torch.Generator().manual_seed(1)
        d_out = torch.randn(o.shape, generator=weights, dtype=torch.float64).to(o)
        d_final = torch.randn(final.shape, generator=weights, dtype=torch.float64).to(final)
        ((o * d_out).sum() + (final * d_final).sum()).backward()
        return {name: leaf.grad for name, leaf in leaves.items()}

    calls = []
    backward = training.chunk_kda_backward
    monkeypatch.setattr(training, "chunk_kda_backward", lambda *a, **kw: calls.append(a[-1]) or backward(*a, **kw))
    mine = grads(None, True, True)
    assert calls and calls[0][0] is not None  # the gate reached the kernels
    calls.clear()
    gated_first = grads(None, True, False)
    assert calls and calls[0][0] is None
    reference = grads(torch.float64, False, False)
    for name, grad in mine.items():
        assert torch.isfinite(grad).all() and grad.dtype == problem[name].dtype, name
        assert rel_rms(grad, gated_first[name]) < 1e-4, name
        error = rel_rms(grad, reference[name])
        assert error < (1.01 * rel_rms(gated_first[name], reference[name]) if name == "A_log" else HALF_TOLERANCE), name


def test_gates_past_the_floor_and_above_zero_give_what_the_clamp_says():
    """g = -inf acts as the floor (finite everything, no gradient to g there, exactly as g = -1000
    does); g > 0 acts as 0 (the same gradients as g = 0, and none to g there)."""
    inputs, cu_seqlens = _problem("logsigmoid", lengths=[65, 70])
    lengths, scale = [65, 70], 0.3
    mask = torch.rand(inputs["g"].shape, generator=torch.Generator().manual_seed(3)) < 0.1

    def grads_with(value):
        changed = dict(inputs, g=torch.where(mask.to(DEVICE), value, inputs["g"]))
        return _kernel_grads(changed, cu_seqlens, lengths, scale, True)

    finite, infinite = grads_with(-1000.0), grads_with(float("-inf"))
    for name in INPUT_NAMES:
        assert torch.isfinite(infinite[name]).all(), name
        assert torch.equal(infinite[name], finite[name]), name
    assert (infinite["g"][mask] == 0).all()
    zero, positive = grads_with(0.0), grads_with(2.5)
    for name in INPUT_NAMES:
        if name != "g":
            assert torch.equal(positive[name], zero[name]), name
    assert (positive["g"][mask] == 0).all()
    assert torch.equal(positive["g"][~mask], zero["g"][~mask])


def _check_16_bit(inputs, **kwargs):
    o, state, grads = run_with_grads(lambda **kw: chunk_kda(**kw, use_triton=True), inputs, **kwargs)
    reference = {name: x.double() for name, x in inputs.items()}
    o_ref, state_ref, grads_ref = run_with_grads(naive_recurrent_kda, reference, **kwargs)
    errors = {"o": rel_rms(o, o_ref), "state": rel_rms(state, state_ref)}
    for name in INPUT_NAMES:
        assert torch.isfinite(grads[name]).all(), name
        assert grads[name].dtype == inputs[name].dtype, name
        errors[name] = rel_rms(grads[name], grads_ref[name])
    assert all(error < HALF_TOLERANCE for error in errors.values()), errors
    return errors


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("gate", ["logsigmoid", -1000.0], ids=["mild", "g-1000"])
def test_16_bit_training_of_a_batch_with_shared_key_heads(gate, dtype):
    """Two sequences of 130 tokens (the last chunk partial), two q/k heads shared by four value
    heads, the output and every gradient in the inputs' dtypes."""
    inputs = kernel_inputs(
        dtype, DEVICE, batch=2, tokens=130, heads=2, value_heads=4, key_dim=32, value_dim=16, gate=gate
    )
    _check_16_bit(inputs, scale=32**-0.5)


@pytest.mark.parametrize(
    "gate,dtype",
    [("logsigmoid", torch.bfloat16), ("kimi", torch.bfloat16), ("logsigmoid", torch.float16)],
    ids=["mild-bf16", "kimi-A200-bf16", "mild-fp16"],
)
def test_bfloat16_key_terms_for_the_reverse_pass(gate, dtype, monkeypatch):
    """``narrow_key_terms`` (the default): with bfloat16 inputs, W, K_out and Q_in in bfloat16 (kept
    from the forward) and widened where they are read (their gradients in buffers of their own): every
    gradient stays within the 16-bit bar of float64 autograd and within twice the error of float32
    terms (``narrow_key_terms=False``; their rounding is all that changes). Float16 inputs keep
    the float32 terms (bfloat16 would triple their dv error): the same gradients, bit for bit."""
    import functools

    import kdalib.ops.triton.training as training

    inputs = kernel_inputs(
        dtype, DEVICE, batch=2, tokens=130, heads=2, value_heads=4, key_dim=32, value_dim=16, gate=gate
    )
    narrow = _check_16_bit(inputs, scale=32**-0.5)
    backward = training.chunk_kda_backward
    monkeypatch.setattr(training, "chunk_kda_backward", functools.partial(backward, narrow_key_terms=False))
    # float32 terms are computed again: the forward's bfloat16 ones are not kept for them
    keep_scores_only = functools.partial(_CHUNK_KDA_TRAINING, keep_terms=False)
    monkeypatch.setattr(training, "chunk_kda_training", keep_scores_only)
    wide = _check_16_bit(inputs, scale=32**-0.5)
    assert training.reverse_state_launch(16) == (16, 4, 1) and training.reverse_state_launch(128) == (32, 4, 1)
    if dtype == torch.float16:
        assert narrow == wide
        return
    assert narrow != wide
    for name, error in narrow.items():
        assert error <= 2 * wide[name] + 1e-4, (name, error, wide[name])
