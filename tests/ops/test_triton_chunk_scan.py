"""The Triton training path: the chunk form's recurrence across chunks as a Triton scan with a
Triton backward, under the PyTorch chunk-local terms.

The scan is checked against the PyTorch scan of the chunk form (values and every gradient), by
``gradcheck`` in float64, and end to end through ``chunk_kda`` / ``kda(backend="triton")``
against float64 autograd of the token loop. Without CUDA the kernels run in Triton's CPU
interpreter on tiny shapes; the ``gpu`` tests run the compiled kernels over the full grid.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from kda_test_utils import (  # noqa: E402
    GPU_DIMS,
    GPU_GATES,
    GPU_TOKENS,
    INPUT_NAMES,
    gpu_grid_inputs,
    gpu_varlen_inputs,
    kernel_inputs,
    make_inputs,
    packed_inputs,
    rel_rms,
    run_with_grads,
)

from kdalib.ops import chunk_kda, kda, naive_recurrent_kda  # noqa: E402
from kdalib.ops.chunk import _bmm, chunk_local_terms, scan_chunk_states  # noqa: E402
from kdalib.ops.router import triton_path  # noqa: E402
from kdalib.ops.triton import triton_chunk_scan  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
GRAD_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}
TERM_NAMES = ("w", "u", "keys_out", "decay_last", "query_in", "scores", "state")


def _terms(chunks, rows, size, key_dim, value_dim, seed=0, dtype=torch.float64, gate_shift=2.0):
    """Chunk-local terms of a random problem, as the chunk form computes them, plus a random state."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    q = randn(chunks, rows, size, key_dim)
    k = torch.nn.functional.normalize(randn(chunks, rows, size, key_dim), dim=-1)
    v = randn(chunks, rows, size, value_dim)
    g = torch.nn.functional.logsigmoid(randn(chunks, rows, size, key_dim) + gate_shift)
    beta = torch.rand(chunks, rows, size, generator=generator, dtype=torch.float64)
    terms = chunk_local_terms(q, k, v, g, beta) + (randn(rows, key_dim, value_dim),)
    return [t.to(DEVICE, dtype) for t in terms]


def _pytorch_scan(w, u, keys_out, decay_last, query_in, scores, state, scale):
    inter, v_new, final = scan_chunk_states(w, u, keys_out, decay_last, query_in, state)
    return (_bmm(scores, v_new) + inter) * scale, final


def _values_and_grads(fn, terms, seed=1):
    leaves = [t.detach().clone().requires_grad_(True) for t in terms]
    o, final = fn(*leaves, 0.7)
    generator = torch.Generator().manual_seed(seed)
    o_weight = torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o)
    s_weight = torch.randn(final.shape, generator=generator, dtype=torch.float64).to(final)
    ((o * o_weight).sum() + (final * s_weight).sum()).backward()
    grads = {name: leaf.grad for name, leaf in zip(TERM_NAMES, leaves)}
    grads["scores"] = grads["scores"].tril()  # entries above the diagonal are not part of the scores
    return o.detach(), final.detach(), grads


# ----------------------------------------------------------------------------- the scan alone


@pytest.mark.parametrize(
    "chunks,rows,size,key_dim,value_dim",
    [(3, 2, 16, 20, 24), (2, 1, 16, 16, 16), (4, 3, 32, 64, 128), (1, 2, 64, 32, 16)],
    ids=["masked-K20-V24", "one-row", "two-value-blocks", "one-chunk-C64"],
)
def test_scan_and_its_gradients_match_the_pytorch_scan(chunks, rows, size, key_dim, value_dim):
    terms = _terms(chunks, rows, size, key_dim, value_dim)
    o, final, grads = _values_and_grads(triton_chunk_scan, terms)
    o_ref, final_ref, grads_ref = _values_and_grads(_pytorch_scan, terms)
    assert rel_rms(o, o_ref) < 1e-12 and rel_rms(final, final_ref) < 1e-12
    for name in TERM_NAMES:
        assert rel_rms(grads[name], grads_ref[name]) < 1e-12, name


def test_scan_gradcheck_in_float64():
    terms = [t.requires_grad_(True) for t in _terms(2, 1, 16, 16, 16, seed=3)]
    assert torch.autograd.gradcheck(
        lambda *xs: triton_chunk_scan(*xs, scale=0.5), terms, eps=1e-6, atol=1e-7, fast_mode=True
    )


def test_scan_gradients_when_only_the_final_state_is_used():
    """The output's gradient then arrives as None and counts as zero."""
    terms = _terms(2, 1, 16, 16, 32, seed=4)

    def final_only(*xs):
        return triton_chunk_scan(*xs)[1].sum()

    def final_only_reference(*xs):
        return _pytorch_scan(*xs, 1.0)[1].sum()

    grads = torch.autograd.grad(final_only(*[t.requires_grad_(True) for t in terms]), terms)
    reference = [t.detach().clone().requires_grad_(True) for t in terms]
    grads_ref = torch.autograd.grad(final_only_reference(*reference), reference, allow_unused=True)
    for name, mine, theirs, leaf in zip(TERM_NAMES, grads, grads_ref, reference):
        theirs = torch.zeros_like(leaf) if theirs is None else theirs  # query_in and scores only reach o
        assert rel_rms(mine.tril() if name == "scores" else mine, theirs) < 1e-12, name


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t: {**t, "u": t["u"][:, :, :8]}, r"u: expected shape \(2, 1, 16, 16\)"),
        (lambda t: {**t, "scores": t["scores"].float()}, "scores: expected float32 or float64 like w"),
        (lambda t: {**t, "state": t["state"][:1, :8]}, r"state: expected shape \(1, 16, 16\)"),
        (
            lambda t: {
                **{n: x[:, :, :12] for n, x in t.items() if x.dim() == 4},
                "scores": t["scores"][:, :, :12, :12],
                "decay_last": t["decay_last"],
                "state": t["state"],
            },
            "the chunk length C must be a power of two >= 16, got 12",
        ),
    ],
    ids=["short-u", "mixed-dtype", "state", "chunk-12"],
)
def test_scan_names_the_argument_that_does_not_fit(change, message):
    terms = dict(zip(TERM_NAMES, _terms(2, 1, 16, 16, 16)))
    terms = change(terms)
    with pytest.raises(ValueError, match=message):
        triton_chunk_scan(*(terms[name] for name in TERM_NAMES))


def test_scan_names_a_tensor_on_another_device_and_a_key_dimension_past_its_limit():
    terms = dict(zip(TERM_NAMES, _terms(1, 1, 16, 16, 16)))
    elsewhere = dict(terms, state=torch.empty(terms["state"].shape, dtype=torch.float64, device="meta"))
    with pytest.raises(ValueError, match="state: expected device .* like w, got meta"):
        triton_chunk_scan(*(elsewhere[name] for name in TERM_NAMES))
    wide = dict(zip(TERM_NAMES, _terms(1, 1, 16, 264, 16)))
    with pytest.raises(ValueError, match="w: the scan supports K <= 256, got K = 264"):
        triton_chunk_scan(*(wide[name] for name in TERM_NAMES))


def test_scan_rejects_an_unknown_precision():
    with pytest.raises(ValueError, match="precision: expected one of ieee, tf32x3, tf32, got 'fp8'"):
        triton_chunk_scan(*_terms(1, 1, 16, 16, 16), precision="fp8")


# ----------------------------------------------------------------------------- end to end


def _problem(dtype=torch.float32, **shape):
    return kernel_inputs(dtype, DEVICE, **shape)


def _check_grads(inputs, dtype=torch.float32, op=None, **kwargs):
    """Outputs and every input gradient of the Triton training path against float64 autograd of a
    reference (the token loop up to a few hundred tokens, the float64 PyTorch chunk form beyond)."""
    op = op or (lambda **kw: kda(**kw, backend="triton"))
    o, state, grads = run_with_grads(op, inputs, **kwargs)
    reference_inputs = {name: x.double() for name, x in inputs.items()}
    if inputs["q"].shape[1] <= 256:
        reference = naive_recurrent_kda
    else:

        def reference(**kw):
            return chunk_kda(**kw, use_triton=False)

    o_ref, state_ref, grads_ref = run_with_grads(reference, reference_inputs, **kwargs)
    limit = GRAD_TOLERANCE[dtype]
    errors = {"o": rel_rms(o, o_ref), "state": rel_rms(state, state_ref)}
    for name in INPUT_NAMES:
        assert torch.isfinite(grads[name]).all(), name
        errors[name] = rel_rms(grads[name], grads_ref[name])
    assert all(error < limit for error in errors.values()), errors
    return errors


@pytest.mark.parametrize("tokens", [1, 2, 17, 64, 65, 130], ids=lambda t: f"T{t}")
def test_training_path_matches_float64_autograd_of_the_token_loop(tokens):
    inputs = _problem(batch=2, tokens=tokens, heads=1, value_heads=2, key_dim=20, value_dim=24, seed=tokens)
    _check_grads(inputs, scale=20**-0.5)


@pytest.mark.parametrize("gate", ["kimi", -1000.0], ids=["kimi-A200", "g-1000"])
def test_training_path_packed_sequences_l2norm_and_extreme_gates(gate):
    inputs, offsets = packed_inputs(
        [1, 2, 3, 16, 17, 40], gate, torch.float32, DEVICE, heads=1, value_heads=2, key_dim=16, value_dim=16
    )
    _check_grads(
        inputs,
        op=lambda **kw: kda(**kw, backend="triton", chunk_size=16),
        cu_seqlens=offsets,
        use_qk_l2norm_in_kernel=True,
    )


def test_training_path_in_bfloat16_runs_the_token_layout_backward(monkeypatch):
    """16-bit inputs take the token-layout path (the forward's kernels, then the Triton backward);
    float32 ones the chunk form's layout with the Triton scan."""
    import kdalib.ops.triton.training as training

    calls = []
    backward = training.chunk_kda_backward
    monkeypatch.setattr(training, "chunk_kda_backward", lambda *a, **kw: calls.append(1) or backward(*a, **kw))
    inputs = _problem(torch.bfloat16, batch=1, tokens=40, heads=1, key_dim=32, value_dim=32)
    _check_grads(inputs, torch.bfloat16, scale=32**-0.5)
    assert calls
    calls.clear()
    _check_grads(_problem(batch=1, tokens=40, heads=1, key_dim=32, value_dim=32), scale=32**-0.5)
    assert not calls


@pytest.mark.parametrize("keep", ["terms", "scores", "states"])
def test_bfloat16_training_keeps_the_inputs_the_chunk_states_and_the_local_work(keep, monkeypatch):
    """What autograd keeps for the backward of a bfloat16 training call: the inputs as given (the
    caller's own tensors, nothing extra), the state entering every chunk in bfloat16 (K V / 64
    per token and value head) and, by default, the forward's chunk-local scores, inverse and A_kk
    (three float32 64 x 64 tiles per chunk and value head: 768 bytes per token) and its terms W,
    K_out, Q_in (bfloat16, 2 K bytes per token each), V_new (float32, 4 V bytes) and exp(G_L)
    (float32, 4 K per chunk); with ``keep_terms=False`` the states and scores, with
    ``keep_scores=False`` the states alone, and the backward computes the rest again."""
    import functools

    import kdalib.ops.triton.training as training

    if keep != "terms":
        kept = dict(keep_scores=keep == "scores", keep_terms=False)
        monkeypatch.setattr(training, "chunk_kda_training", functools.partial(training.chunk_kda_training, **kept))
    key_dim = value_dim = 128
    inputs = _problem(torch.bfloat16, batch=1, tokens=128, heads=1, key_dim=key_dim, value_dim=value_dim)
    inputs = {name: x.requires_grad_(True) for name, x in inputs.items() if name != "initial_state"}
    saved = {}
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.setdefault(x.untyped_storage().data_ptr(), x), id):
        o, _ = chunk_kda(**inputs, use_triton=True)
    for x in inputs.values():  # the caller's own tensors cost nothing extra
        saved.pop(x.untyped_storage().data_ptr(), None)
    states = [x for x in saved.values() if x.dtype == torch.bfloat16 and x.shape[-2:] == (key_dim, value_dim)]
    scores = [x for x in saved.values() if x.dtype == torch.float32 and x.shape[-2:] == (64, 64)]
    key_terms = [x for x in saved.values() if x.dtype == torch.bfloat16 and x.shape == (128, 1, key_dim)]
    value_terms = [x for x in saved.values() if x.dtype == torch.float32 and x.shape == (128, 1, value_dim)]
    decay = [x for x in saved.values() if x.dtype == torch.float32 and x.shape == (2, 1, key_dim)]
    kept_terms = keep == "terms"
    assert len(states) == 1 and len(scores) == (0 if keep == "states" else 3)
    assert (len(key_terms), len(value_terms), len(decay)) == ((3, 1, 1) if kept_terms else (0, 0, 0))
    # nothing else: no norms without the in-kernel L2 norm
    assert len(saved) == len(states) + len(scores) + len(key_terms) + len(value_terms) + len(decay)
    per_token = sum(x.untyped_storage().nbytes() for x in saved.values()) / o.shape[1]
    expected = 2 * key_dim * value_dim / 64 + (0 if keep == "states" else 3 * 4 * 64)
    expected += (3 * 2 * key_dim + 4 * value_dim + 4 * key_dim / 64) if kept_terms else 0
    assert per_token == expected
    assert o.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16_bit_training_of_packed_sequences_with_the_in_kernel_l2_norm(dtype):
    """The 16-bit path end to end: inputs kept in their dtype (q and k normalised in float32 and
    rounded back), bfloat16 chunk states, the output written in v's dtype; chunks of 64, so both
    chunk-local kernels run, over sequences that start and end inside chunks."""
    inputs, offsets = packed_inputs(
        [1, 63, 66], "kimi", dtype, DEVICE, heads=1, value_heads=2, key_dim=32, value_dim=16
    )
    _check_grads(inputs, dtype, cu_seqlens=offsets, use_qk_l2norm_in_kernel=True)


def test_routes():
    """Which path chunk_kda and fused_recurrent_kda take, by device, dtype and whether gradients are needed."""
    inputs = make_inputs(tokens=4, heads=1, key_dim=16, value_dim=16)
    cpu32 = {name: x.float() for name, x in inputs.items()}
    route = dict(initial_state=None, use_triton=None)
    for name in ("q", "k", "v", "g", "beta"):
        route[name] = cpu32[name]
    assert triton_path("chunk", **route) is None  # CPU tensors: the PyTorch form, even interpreted
    assert triton_path("chunk", **dict(route, use_triton=True)).name == "forward"
    assert triton_path("recurrent", **dict(route, use_triton=True)).name == "recurrent"
    trained = dict(route, v=cpu32["v"].clone().requires_grad_(True))
    assert triton_path("chunk", **dict(trained, use_triton=True)).name == "training"
    assert triton_path("chunk", **dict(trained, use_triton=False)) is None
    with pytest.raises(RuntimeError, match="use_triton=True: no Triton kernel computes the recurrent form's gradients"):
        triton_path("recurrent", **dict(trained, use_triton=True))
    with pytest.raises(RuntimeError, match="use_triton=True: .*float64"):
        triton_path("chunk", **dict(route, q=inputs["q"], use_triton=True))
    with pytest.raises(RuntimeError, match="use_triton=True: .*K <= 256"):
        wide = {name: cpu32[name].new_zeros(*cpu32[name].shape[:-1], 320) for name in ("q", "k", "g")}
        triton_path("chunk", **dict(route, **wide, use_triton=True))


def test_kda_backend_triton_trains_and_says_what_it_cannot_run():
    inputs = _problem(batch=1, tokens=20, heads=1, key_dim=16, value_dim=16)
    _check_grads(inputs, op=lambda **kw: kda(**kw, backend="triton", chunk_size=16))
    with pytest.raises(RuntimeError, match="backend='triton'.*float64"):
        kda(**{name: x.double().requires_grad_(True) for name, x in inputs.items()}, backend="triton")


# ----------------------------------------------------------------------------- full grid on a GPU


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("key_dim,value_dim", GPU_DIMS, ids=lambda d: f"{d}")
@pytest.mark.parametrize("tokens", GPU_TOKENS, ids=lambda t: f"T{t}")
def test_gpu_training_grid(tokens, key_dim, value_dim, dtype):
    _check_grads(gpu_grid_inputs(tokens, key_dim, value_dim, dtype, DEVICE), dtype, scale=key_dim**-0.5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("gate", list(GPU_GATES.values()), ids=list(GPU_GATES))
def test_gpu_training_varlen_gates_and_l2norm(gate, dtype):
    inputs, offsets = gpu_varlen_inputs(gate, dtype, DEVICE)
    _check_grads(inputs, dtype, scale=128**-0.5, cu_seqlens=offsets, use_qk_l2norm_in_kernel=True)


@pytest.mark.gpu
@needs_cuda
def test_gpu_chunk_kda_trains_through_the_token_layout_backward(monkeypatch):
    import kdalib.ops.triton.training as training

    calls = []
    backward = training.chunk_kda_backward
    monkeypatch.setattr(training, "chunk_kda_backward", lambda *a, **kw: calls.append(1) or backward(*a, **kw))
    inputs = _problem(torch.bfloat16, batch=1, tokens=300, heads=2, key_dim=64, value_dim=64)
    _check_grads(inputs, torch.bfloat16, op=chunk_kda)
    assert calls
