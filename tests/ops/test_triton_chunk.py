"""The Triton chunked forward against the float64 token loop.

Without CUDA the kernels run in Triton's CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before triton is imported), so CI checks their logic on tiny shapes; the
``gpu`` tests run the compiled kernels over the full grid on a CUDA device.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

import triton.language as tl  # noqa: E402
from kda_test_utils import (  # noqa: E402
    GPU_DIMS,
    GPU_GATES,
    GPU_TOKENS,
    gpu_grid_inputs,
    gpu_varlen_inputs,
    kernel_inputs,
    make_inputs,
    rel_rms,
)

from kdalib.ops import chunk_kda, kda, naive_recurrent_kda  # noqa: E402
from kdalib.ops.triton import triton_chunk_kda  # noqa: E402
from kdalib.ops.triton.chunk import state_launch  # noqa: E402
from kdalib.ops.triton.prefill_local import _gate  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-3, torch.float16: 5e-3}


def _problem(dtype=torch.float32, **shape):
    return kernel_inputs(dtype, DEVICE, **shape)


def _check(inputs, dtype=torch.float32, tolerance=None, **kwargs):
    """Runs the kernel and a float64 reference on the same (rounded) inputs; returns both errors.

    The reference is the token loop; past a few hundred tokens it is the float64 PyTorch chunk
    form, which matches the token loop to ~1e-12 (tests/ops/test_ops_chunk_vs_recurrence.py).
    """
    o, state = triton_chunk_kda(**inputs, output_final_state=True, **kwargs)
    oracle_inputs = {name: x.double() for name, x in inputs.items()}
    oracle = naive_recurrent_kda if inputs["q"].shape[1] <= 256 else chunk_kda
    o_ref, state_ref = oracle(**oracle_inputs, output_final_state=True, **kwargs)
    assert o.dtype == inputs["v"].dtype and state.dtype == torch.float32
    assert torch.isfinite(o).all() and torch.isfinite(state).all()
    limit = TOLERANCE[dtype] if tolerance is None else tolerance
    errors = rel_rms(o, o_ref), rel_rms(state, state_ref)
    assert errors[0] < limit and errors[1] < limit, errors
    return errors


# ----------------------------------------------------------------------------- interpreter-sized


@pytest.mark.parametrize("tokens", [1, 2, 15, 16, 17, 63, 64, 65, 130], ids=lambda t: f"T{t}")
def test_any_length_matches_the_token_loop(tokens):
    _check(_problem(batch=1, tokens=tokens, heads=1, key_dim=16, value_dim=16), scale=0.25)


@pytest.mark.parametrize(
    "heads,value_heads,key_dim,value_dim",
    [(2, 2, 32, 16), (1, 2, 16, 32), (2, 4, 20, 24), (1, 1, 64, 16)],
    ids=["H2-K32-V16", "gva-H1-HV2", "gva-K20-V24", "K64"],
)
def test_heads_and_dims(heads, value_heads, key_dim, value_dim):
    inputs = _problem(batch=2, tokens=40, heads=heads, value_heads=value_heads, key_dim=key_dim, value_dim=value_dim)
    _check(inputs, scale=key_dim**-0.5)


@pytest.mark.parametrize("l2norm", [False, True], ids=["raw-qk", "l2norm"])
def test_in_kernel_l2_norm_and_no_initial_state(l2norm):
    inputs = _problem(batch=1, tokens=70, heads=2, key_dim=16, value_dim=16, normalize_keys=False)
    inputs.pop("initial_state")
    _check(inputs, scale=0.25, use_qk_l2norm_in_kernel=l2norm, tolerance=1e-5 if l2norm else 1e-4)


def test_packed_sequences_each_with_its_own_state():
    lengths = [1, 2, 3, 63, 64, 65, 1, 1, 5]
    offsets = torch.tensor([0] + lengths).cumsum(0).to(DEVICE)
    inputs = _problem(
        batch=1, tokens=sum(lengths), heads=1, value_heads=2, key_dim=16, value_dim=16, num_states=len(lengths)
    )
    _check(inputs, scale=0.25, cu_seqlens=offsets)


@pytest.mark.parametrize("gate", ["kimi", -1000.0], ids=["kimi-gate-A200", "g-1000"])
def test_extreme_gates_stay_finite_and_exact(gate):
    # The Kimi gate with exp(A_log) up to 200 mixes heads of mild and of very strong decay.
    _check(_problem(batch=1, tokens=80, heads=2, key_dim=16, value_dim=16, gate=gate), scale=0.25)


@pytest.mark.parametrize(
    "gate",
    [-4.9, -5.2, -9.9, -10.2, -21.0, -100.0],
    ids=["span-78", "span-83", "span-158", "span-163", "span-336", "span-1600"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_constant_decays_from_mild_to_past_float32s_range(gate, dtype):
    """A constant log decay per token sets every 16-row block's span (16 x the decay): up to 80 a
    diagonal block is one product in the chunk's program (column factors up to exp(78.4)), past it
    the diagonal launch's carried keys build it, up to a decay that zeroes every factor between
    tokens. Each against the token loop, with ragged last chunks and the in-kernel L2 norm."""
    inputs = _problem(dtype, batch=1, tokens=100, heads=1, key_dim=32, value_dim=16, gate=gate, normalize_keys=False)
    _check(inputs, dtype, scale=0.25, use_qk_l2norm_in_kernel=True)


class _DiagonalLaunches:
    """Stands in for ``prefill_local._diagonal_kernel`` in :mod:`kdalib.ops.triton.chunk`: runs it and
    keeps a copy of the marks of every launch."""

    def __init__(self, kernel):
        self.kernel, self.marks = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.kernel[grid](*args, **kwargs)
            self.marks.append(args[10].clone())

        return launch


@pytest.mark.parametrize("decay", [-4.9, -5.2], ids=["span-78", "span-83"])
def test_the_diagonal_launch_marks_the_blocks_that_span_past_the_boundary(decay, monkeypatch):
    """A constant log decay: a full 16-row block spans 16 x the decay, a sequence's last, shorter
    block less. Exactly the blocks past ``DIAG_SPAN`` are marked, and the outputs are exact."""
    import kdalib.ops.triton.chunk as chunk
    from kdalib.ops.triton.runtime import DIAG_SPAN, SUB

    launches = _DiagonalLaunches(chunk._diagonal_kernel)
    monkeypatch.setattr(chunk, "_diagonal_kernel", launches)
    inputs = _problem(batch=1, tokens=100, heads=1, key_dim=16, value_dim=16, gate=decay)
    _check(inputs, scale=0.25)
    (marks,) = launches.marks
    rows = torch.tensor([min(SUB, 100 - 16 * b) if 16 * b < 100 else 0 for b in range(marks.numel())])
    expected = (-decay * rows > DIAG_SPAN).to(torch.int8)
    assert torch.equal(marks.flatten().cpu(), expected)
    assert expected.any() == (decay == -5.2)


@pytest.mark.parametrize("lower_bound", [-5.0, -6.0])
def test_a_bounded_gate_within_the_span_needs_no_diagonal_launch(lower_bound, monkeypatch):
    """``kda_gate``'s bounded form decays at most ``-lower_bound`` per token: at -5 no 16-row block
    can span past ``DIAG_SPAN`` = 80, so the marking launch is skipped; at -6 it runs. The outputs
    match the kernels run on the gate computed by ``kda_gate`` either way."""
    import kdalib.ops.triton.chunk as chunk
    from kdalib.ops import kda_gate

    launches = _DiagonalLaunches(chunk._diagonal_kernel)
    monkeypatch.setattr(chunk, "_diagonal_kernel", launches)
    inputs = _problem(batch=1, tokens=70, heads=2, key_dim=16, value_dim=16)
    generator = torch.Generator().manual_seed(3)
    g_raw = (4.0 + torch.randn(inputs["g"].shape, generator=generator)).to(DEVICE)  # sigmoid near 1
    A_log, dt_bias = torch.zeros(2, device=DEVICE), torch.zeros(2 * 16, device=DEVICE)
    o, state = triton_chunk_kda(
        **dict(inputs, g=g_raw), scale=0.25, output_final_state=True, A_log=A_log, dt_bias=dt_bias,
        lower_bound=lower_bound,
    )  # fmt: skip
    assert len(launches.marks) == (0 if lower_bound == -5.0 else 1)
    if launches.marks:
        assert launches.marks[0].any()  # full blocks decay about 16 x 5.9 here
    decay = kda_gate(g_raw, A_log, dt_bias, lower_bound)
    o_given, state_given = triton_chunk_kda(**dict(inputs, g=decay), scale=0.25, output_final_state=True)
    assert rel_rms(o, o_given) < 1e-5 and rel_rms(state, state_given) < 1e-5


@pytest.mark.parametrize("strong", [-9.0, -12.0, -25.0], ids=["span-144", "span-192", "span-400"])
def test_a_strong_channel_beside_mild_ones(strong):
    """One channel decays strongly while the others barely decay, so the scores far below the
    diagonal carry full weight through the mild channels while the strong one vanishes."""
    inputs = _problem(batch=1, tokens=100, heads=2, key_dim=32, value_dim=16, gate=-0.05)
    inputs["g"][..., 0] = strong
    _check(inputs, scale=0.25, use_qk_l2norm_in_kernel=True)


def test_strong_gates_that_vary_token_by_token():
    """Log decays drawn from [-25, 0] per token and channel, so each token's decay differs from its
    neighbours' by orders of magnitude; scores between tokens a few steps apart still carry weight."""
    inputs = _problem(batch=1, tokens=100, heads=2, key_dim=32, value_dim=16)
    generator = torch.Generator().manual_seed(7)
    inputs["g"] = -25.0 * torch.rand(inputs["g"].shape, generator=generator, dtype=inputs["g"].dtype)
    inputs["g"][..., :4] *= 0.01  # a few mild channels beside them
    _check(inputs, scale=0.25, use_qk_l2norm_in_kernel=True)


def test_positive_log_decay_counts_as_zero_like_the_chunk_form():
    inputs = _problem(batch=1, tokens=20, heads=1, key_dim=16, value_dim=16)
    inputs["g"] = inputs["g"].abs() + 0.5
    inputs["g"][0, 3, 0, 0] = float("inf")
    o, state = triton_chunk_kda(**inputs, scale=0.25, output_final_state=True)
    clamped = dict(inputs, g=inputs["g"].clamp(max=0.0))
    o_ref, state_ref = chunk_kda(**clamped, scale=0.25, output_final_state=True)
    assert torch.isfinite(o).all() and rel_rms(o, o_ref) < 1e-5 and rel_rms(state, state_ref) < 1e-5


def test_a_nan_gate_is_not_read_as_a_decay():
    """NaN stays NaN: the outputs of its chunk and of every later token are NaN, earlier chunks keep theirs."""
    inputs = _problem(batch=1, tokens=140, heads=1, key_dim=16, value_dim=16)
    inputs["g"][0, 100, 0, 3] = float("nan")
    o, state = triton_chunk_kda(**inputs, scale=0.25, output_final_state=True)
    assert torch.isfinite(o[0, :64]).all()
    assert torch.isnan(o[0, 100:]).all() and torch.isnan(state).any()


def test_float32_products_are_tf32x3_on_the_gpu_and_a_precision_the_inputs_cannot_take_is_refused(monkeypatch):
    """The one precision rule: float32 data take three TF32 products by default on the GPU, what
    is asked otherwise; float64 data and the interpreter take IEEE products whatever is asked."""
    from kdalib.ops.triton.runtime import float32_precision

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert float32_precision(torch.float32) == "tf32x3"
    assert float32_precision(torch.float32, "ieee") == "ieee"
    assert float32_precision(torch.float64, "tf32") == "ieee"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert float32_precision(torch.float32, "tf32") == "ieee"
    for dtype, precision, allowed in (
        (torch.bfloat16, "tf32x3", "16-bit inputs take one of ieee, tf32"),
        (torch.float32, "fp8", "float32 inputs take one of ieee, tf32x3, tf32"),
    ):
        with pytest.raises(ValueError, match=f"precision: {allowed}, got '{precision}'"):
            triton_chunk_kda(
                **_problem(dtype, tokens=4, heads=1, key_dim=16, value_dim=16), scale=0.25, precision=precision
            )


def test_bfloat16_inputs_keep_a_float32_state():
    inputs = _problem(torch.bfloat16, batch=1, tokens=40, heads=1, key_dim=32, value_dim=32)
    _check(inputs, torch.bfloat16, scale=32**-0.5)


def test_kda_backend_triton_and_its_errors(monkeypatch):
    """Inference through ``backend="triton"`` runs the forward kernels (training: test_triton_chunk_scan.py)."""
    import kdalib.ops.router as router

    calls = []
    monkeypatch.setattr(router, "triton_chunk_kda", lambda *a, **kw: calls.append(1) or triton_chunk_kda(*a, **kw))
    inputs = _problem(batch=1, tokens=20, heads=1, key_dim=16, value_dim=16)
    o, _ = kda(**inputs, backend="triton")
    o_ref, _ = naive_recurrent_kda(**inputs)
    assert rel_rms(o, o_ref) < 1e-5 and calls
    with pytest.raises(RuntimeError, match="backend='triton'.*float64"):
        kda(**{name: x.double() for name, x in inputs.items()}, backend="triton")


def test_chunk_kda_keeps_the_pytorch_form_for_cpu_tensors(monkeypatch):
    """Only CUDA tensors reach the kernels through chunk_kda: CPU calls never do, even interpreted."""
    import kdalib.ops.router as router

    def refuse(*args, **kwargs):
        raise AssertionError("the Triton kernels must not serve CPU tensors through chunk_kda")

    monkeypatch.setattr(router, "triton_chunk_kda", refuse)
    inputs = {name: x.float() for name, x in make_inputs(tokens=20, heads=1, key_dim=16, value_dim=16).items()}
    with torch.no_grad():
        o, _ = chunk_kda(**inputs)
    assert rel_rms(o, naive_recurrent_kda(**inputs)[0]) < 1e-5


# ----------------------------------------------------------------------------- full grid on a GPU


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("key_dim,value_dim", GPU_DIMS, ids=lambda d: f"{d}")
@pytest.mark.parametrize("tokens", GPU_TOKENS, ids=lambda t: f"T{t}")
def test_gpu_grid(tokens, key_dim, value_dim, dtype):
    _check(gpu_grid_inputs(tokens, key_dim, value_dim, dtype, DEVICE), dtype, scale=key_dim**-0.5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("gate", list(GPU_GATES.values()), ids=list(GPU_GATES))
def test_gpu_varlen_gates_and_l2norm(gate, dtype):
    inputs, offsets = gpu_varlen_inputs(gate, dtype, DEVICE)
    _check(inputs, dtype, scale=128**-0.5, cu_seqlens=offsets, use_qk_l2norm_in_kernel=True)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_chunk_kda_and_kda_use_the_kernel_for_inference(dtype):
    """Automatic routing on CUDA: inference in bfloat16 and in float32 (at the kernel's default,
    tf32x3 products) takes the Triton forward."""
    inputs = _problem(dtype, batch=1, tokens=300, heads=2, key_dim=64, value_dim=64)
    with torch.no_grad():
        expected, _ = triton_chunk_kda(**inputs, scale=0.125)
        for result, _ in (chunk_kda(**inputs), kda(**inputs)):
            assert torch.equal(result, expected)


@pytest.mark.parametrize("lower_bound", [None, -5.0], ids=["softplus-gate", "bounded-gate"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_gate_computed_in_the_kernel_matches_kda_gate(lower_bound, dtype):
    """The forward kernel computes ``kda_gate(g_raw, A_log, dt_bias, lower_bound)`` itself; the
    result equals the kernel run on the gate computed by kda_gate (float64 reference too)."""
    from kdalib.ops import kda_gate

    inputs = _problem(dtype, batch=1, tokens=90, heads=2, value_heads=4, key_dim=16, value_dim=16)
    generator = torch.Generator().manual_seed(7)
    g_raw = torch.randn(inputs["g"].shape, generator=generator).to(DEVICE, dtype)
    A_log = torch.linspace(-1.0, 3.0, 4).to(DEVICE)  # exp(A_log) from 0.37 to 20: mild to strong
    dt_bias = (0.5 * torch.randn(4 * 16, generator=generator)).to(DEVICE)
    gate = dict(A_log=A_log, dt_bias=dt_bias, lower_bound=lower_bound)
    o, state = triton_chunk_kda(**dict(inputs, g=g_raw), scale=0.25, output_final_state=True, **gate)
    decay = kda_gate(g_raw, A_log, dt_bias, lower_bound)
    o_given, state_given = triton_chunk_kda(**dict(inputs, g=decay), scale=0.25, output_final_state=True)
    exact = {name: x.double() for name, x in dict(inputs, g=decay).items()}
    o_ref, state_ref = naive_recurrent_kda(**exact, scale=0.25, output_final_state=True)
    assert rel_rms(o, o_given) < 1e-5 and rel_rms(state, state_given) < 1e-5
    assert rel_rms(o, o_ref) < TOLERANCE[dtype] and rel_rms(state, state_ref) < TOLERANCE[dtype]


def _launch_settings_problem(gate):
    """Inputs on which launch settings are compared: packed sequences of 5, 64, 70 and 1 tokens
    (ending inside 16-row blocks), two value heads sharing a key head, an initial state each,
    the in-kernel L2 norm; returns ``(inputs, cu_seqlens, the call's other arguments)``."""
    lengths = [5, 64, 70, 1]
    offsets = torch.tensor([0] + lengths).cumsum(0).to(DEVICE)
    inputs = _problem(
        batch=1, tokens=sum(lengths), heads=1, value_heads=2, key_dim=16, value_dim=16, gate=gate,
        num_states=len(lengths),
    )  # fmt: skip
    run = dict(scale=0.25, output_final_state=True, cu_seqlens=offsets, use_qk_l2norm_in_kernel=True)
    return inputs, offsets, run


@pytest.mark.parametrize("gate", ["kimi", -1000.0], ids=["kimi-gate-A200", "g-1000"])
def test_the_chunk_local_work_in_two_launches_is_the_one_launch_result(gate):
    """``local_warps=(scores, terms)`` runs the chunk-local kernel as two launches (the scores, then
    the inverse and the terms, reading the scores and the norms from memory): the same arithmetic,
    so the same bits, with packed sequences, shared key heads and mild and strong decays."""
    inputs, offsets, run = _launch_settings_problem(gate)
    one = triton_chunk_kda(**inputs, **run, local_warps=2)
    for warps in ((2, 4), (2, 2)):
        split = triton_chunk_kda(**inputs, **run, local_warps=warps)
        assert torch.equal(one[0], split[0]) and torch.equal(one[1], split[1]), warps
    with pytest.raises(ValueError, match="local_warps"):
        triton_chunk_kda(**inputs, scale=0.25, cu_seqlens=offsets, local_warps=(2, 2, 4))


def test_the_state_pass_writes_the_corrections_over_u(monkeypatch):
    """The forward keeps no buffer of its own for ``V_new = U - W S``: the state pass writes it over
    ``U`` tile by tile (each tile read, then written, by the one program that owns it), and the
    output still matches the token loop, with packed sequences."""
    import kdalib.ops.triton.chunk as chunk

    launched, kernel = [], chunk._chunk_states_kernel

    class Caught:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append(args[1].data_ptr() == args[5].data_ptr())  # u, v_new
                return kernel[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(chunk, "_chunk_states_kernel", Caught())
    lengths = [70, 130]
    offsets = torch.tensor([0] + lengths).cumsum(0).to(DEVICE)
    inputs = _problem(batch=1, tokens=sum(lengths), heads=1, value_heads=2, key_dim=16, value_dim=16, num_states=2)
    _check(inputs, scale=0.25, cu_seqlens=offsets)
    assert launched == [True]


@pytest.mark.parametrize("gate", ["kimi", -1000.0], ids=["kimi-gate-A200", "g-1000"])
def test_the_diagonal_launch_that_loads_each_row_ahead_computes_the_same(gate):
    """``diagonal_launch=(warps, True)`` (the default at 1 warp): the strong diagonal blocks' steps
    load the next row before they work on their own, against ``(1, False)``; the same arithmetic
    in the same order, so the same bits in the interpreter (on a GPU another warp count may sum in
    another order: within float32 rounding), with packed sequences ending inside blocks, shared
    key heads and the in-kernel L2 norm. With g = -1000 every diagonal block takes that launch;
    bad settings are refused."""
    inputs, offsets, run = _launch_settings_problem(gate)
    row_by_row = triton_chunk_kda(**inputs, **run, diagonal_launch=(1, False))
    ahead = triton_chunk_kda(**inputs, **run, diagonal_launch=(1, True))
    assert torch.equal(row_by_row[0], ahead[0]) and torch.equal(row_by_row[1], ahead[1])
    wider = triton_chunk_kda(**inputs, **run, diagonal_launch=(2, True))
    assert rel_rms(wider[0], ahead[0]) < 1e-6 and rel_rms(wider[1], ahead[1]) < 1e-6
    for bad in ((1,), (3, True), (True, True), (1, 1)):
        with pytest.raises(ValueError, match="diagonal_launch"):
            triton_chunk_kda(**inputs, scale=0.25, cu_seqlens=offsets, diagonal_launch=bad)


@pytest.mark.parametrize(
    ("programs", "multiprocessors", "value_dim", "block_k", "narrow", "expected"),
    [
        (64, 132, 128, 128, torch.bfloat16, (32, 2)),  # B2 H32: 256 programs of 32 columns
        (32, 132, 128, 128, torch.bfloat16, (16, 3)),  # B1 H32: 128 of 32 would leave SMs idle
        (33, 132, 128, 128, torch.bfloat16, (32, 2)),
        (32, None, 128, 128, torch.bfloat16, (32, 2)),  # not a GPU: the widest
        (64, 132, 16, 128, torch.bfloat16, (16, 3)),
        (64, 132, 128, 256, torch.bfloat16, (16, 2)),
        (64, 132, 128, 128, torch.float32, (16, 2)),
    ],
)
def test_the_state_pass_takes_its_columns_by_programs_per_multiprocessor(
    programs, multiprocessors, value_dim, block_k, narrow, expected
):
    assert state_launch(programs, multiprocessors, value_dim, block_k, narrow) == expected


def test_the_state_pass_in_16_or_32_columns_per_program():
    """16 and 32 value columns per program split the state's columns differently (the stages are
    the compiler's pipelining, not exercised under the interpreter): both match the float64
    reference, and each other to float32 rounding, with packed sequences, shared key heads and an
    initial state."""
    lengths = [70, 3, 64]
    offsets = torch.tensor([0] + lengths).cumsum(0).to(DEVICE)
    inputs = _problem(
        torch.bfloat16, batch=1, tokens=sum(lengths), heads=1, value_heads=2, key_dim=32, value_dim=64,
        num_states=len(lengths),
    )  # fmt: skip
    run = dict(scale=32**-0.5, output_final_state=True, cu_seqlens=offsets)
    runs = [triton_chunk_kda(**inputs, **run, block_v=bv, state_stages=st) for bv, st in ((16, 3), (32, 2))]
    reference = chunk_kda(**{name: x.double() for name, x in inputs.items()}, **run)
    for o, state in runs:
        assert rel_rms(o, reference[0]) < 5e-3 and rel_rms(state, reference[1]) < 5e-3
    (o16, s16), (o32, s32) = runs
    assert torch.allclose(s16, s32, rtol=1e-5, atol=1e-6)
    assert torch.allclose(o16.float(), o32.float(), rtol=1e-2, atol=1e-3)


@triton.jit
def _gate_tile_kernel(g, a_log, dt_bias, lower_bound, out, T, HV: tl.constexpr, K: tl.constexpr, ROWS: tl.constexpr,
                      GATE: tl.constexpr, FLOOR: tl.constexpr):  # fmt: skip
    """The forward kernel's in-kernel gate for every token of value head ``program_id(0)``, stored in ``out``."""
    i_hv = tl.program_id(0)
    rows, cols = tl.arange(0, ROWS), tl.arange(0, K)
    mask = (rows < T)[:, None] & (cols < K)[None, :]
    tile = _gate(
        g + i_hv * K, rows, rows < T, cols, cols < K, i_hv, a_log, dt_bias, lower_bound, HV * K, K, GATE, FLOOR
    )
    tl.store(out + i_hv * K + rows[:, None] * (HV * K) + cols[None, :], tile, mask=mask)


@pytest.mark.parametrize(
    ("lower_bound", "with_bias"),
    [(None, True), (None, False), (-5.0, True), (-5.0, False), ("given", False)],
    ids=["softplus", "softplus-no-bias", "bounded", "bounded-no-bias", "given"],
)
def test_the_in_kernel_gate_is_kda_gate_value_for_value(lower_bound, with_bias):
    """The forward kernel's ``_gate`` against :func:`kdalib.ops.kda_gate` itself, entry by entry, with
    the forms numbered as runtime numbers them: raw inputs from -60 to 60 (softplus's overflow-free
    form), rates from 0.05 to 55 (decays past -GATE_FLOOR are floored), a NaN kept, masked rows
    untouched."""
    from kdalib.ops import kda_gate
    from kdalib.ops.triton.runtime import GATE_FLOOR, gate_form

    tokens, value_heads, key_dim = 23, 3, 16
    generator = torch.Generator().manual_seed(11)
    raw = torch.linspace(-60.0, 60.0, tokens * value_heads * key_dim)
    raw = raw[torch.randperm(raw.numel(), generator=generator)].view(tokens, value_heads, key_dim)
    raw[5, 1, 3] = float("nan")
    A_log = torch.tensor([-3.0, 0.5, 4.0])
    dt_bias = torch.randn(value_heads * key_dim, generator=generator) if with_bias else None
    given = lower_bound == "given"
    bound = None if given else lower_bound
    if given:
        expected = raw.clamp(max=0.0).clamp(min=-GATE_FLOOR)
    else:  # float64: the kernel's float32 softplus, log(1 + exp(-|x|)), is exact to 2^-24 of 1 before the rate
        wide = (x if x is None else x.double() for x in (raw, A_log, dt_bias))
        expected = kda_gate(*wide, bound).clamp(min=-GATE_FLOOR)
    out = torch.full((32, value_heads, key_dim), 7.0)
    inputs = [x if x is None else x.to(DEVICE) for x in (raw, A_log, dt_bias)]
    out = out.to(DEVICE)
    _gate_tile_kernel[(value_heads,)](
        *inputs, 0.0 if bound is None else bound, out, tokens, HV=value_heads, K=key_dim, ROWS=32,
        GATE=gate_form(None if given else A_log, bound), FLOOR=GATE_FLOOR,
    )  # fmt: skip
    out = out.cpu()
    rate = A_log.exp().view(1, value_heads, 1).double()
    error = (out[:tokens].double() - expected).abs().nan_to_num()
    assert (error <= 1e-6 * expected.abs().nan_to_num() + 2.0**-23 * rate).all(), error.max()
    assert torch.equal(out[:tokens].isnan(), expected.isnan())
    assert torch.isnan(out[5, 1, 3]) and (out[tokens:] == 7.0).all()
    assert (out[:tokens].nan_to_num() <= 0).all() and (out[:tokens].nan_to_num() >= -GATE_FLOOR).all()


def test_chunk_kda_takes_the_raw_gate_and_checks_its_parameters():
    """On the CPU the PyTorch form runs on ``kda_gate``'s output, with gradients to the gate's
    parameters; the parameters are checked by name."""
    from kdalib.ops import kda_gate

    inputs = _problem(batch=1, tokens=30, heads=2, key_dim=16, value_dim=16)
    g_raw = torch.randn(inputs["g"].shape, dtype=torch.float64)
    A_log = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    exact = {name: x.double() for name, x in inputs.items()}
    o, _ = chunk_kda(**dict(exact, g=g_raw), scale=0.25, A_log=A_log, lower_bound=-5.0)
    o_ref, _ = chunk_kda(**dict(exact, g=kda_gate(g_raw, A_log, None, -5.0)), scale=0.25)
    assert torch.allclose(o, o_ref, rtol=0, atol=1e-12)
    o.sum().backward()
    assert A_log.grad is not None and torch.isfinite(A_log.grad).all()
    with pytest.raises(ValueError, match="A_log: the gate's dt_bias and lower_bound need A_log"):
        chunk_kda(**inputs, lower_bound=-5.0)
    with pytest.raises(ValueError, match=r"A_log: expected shape \[HV\] = \[2\]"):
        chunk_kda(**inputs, A_log=torch.zeros(3))
    with pytest.raises(ValueError, match="lower_bound must be negative"):
        chunk_kda(**inputs, A_log=torch.zeros(2), lower_bound=1.0)


def test_a_minus_infinity_gate_is_a_full_reset_not_nan():
    """g = -inf forgets everything before it (exp(-inf) = 0): the forward stays finite and matches
    the PyTorch chunk form, which multiplies decays and so never forms -inf - (-inf)."""
    inputs = _problem(batch=1, tokens=150, heads=1, value_heads=2, key_dim=16, value_dim=16)
    inputs["g"][0, 10, :, :] = float("-inf")
    inputs["g"][0, 70, 1, 3] = float("-inf")
    o, state = triton_chunk_kda(**inputs, scale=0.25, output_final_state=True)
    exact = {name: x.double() for name, x in inputs.items()}
    o_ref, state_ref = chunk_kda(**exact, scale=0.25, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(state).all()
    assert rel_rms(o, o_ref) < 1e-5 and rel_rms(state, state_ref) < 1e-5
