"""What the kdalib.ops tests share: random KDA problems, the registry operators that run on the CPU, the error metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdalib.ops import OPERATORS, kda_gate

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
GRAD_TOLERANCE = {torch.float64: 1e-11, torch.float32: 5e-5}
INPUT_NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def cpu_operators(autograd: bool | None = None) -> dict:
    """The registry's operators that run on the CPU, name -> function (only those with, or
    without, a backward pass when ``autograd`` is given): every test over "all operators"
    reads this, so a new operator is tested as soon as it is registered."""
    return {
        name: op.function
        for name, op in OPERATORS.items()
        if op.supports("cpu") and (autograd is None or op.autograd == autograd)
    }


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative RMS error ``||actual - expected|| / ||expected||`` (0 when both are zero)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.pow(2).mean().sqrt().item()
    error = (actual - expected).pow(2).mean().sqrt().item()
    return error if scale == 0.0 else error / scale


def make_inputs(
    batch: int = 1,
    tokens: int = 16,
    heads: int = 2,
    value_heads: int | None = None,
    key_dim: int = 32,
    value_dim: int = 32,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    num_states: int | None = None,
    gate: str = "logsigmoid",
    normalize_keys: bool = True,
) -> dict[str, torch.Tensor]:
    """A random KDA problem as keyword arguments (q, k, v, g, beta, initial_state).

    Keys are L2-normalised (as in the model) so that the delta rule is contractive;
    ``gate`` picks the decay: "logsigmoid" (moderate), "kimi" (the softplus gate with
    exp(A_log) up to 200) or a float (constant g, e.g. -1000.0).
    """
    value_heads = heads if value_heads is None else value_heads
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    q = randn(batch, tokens, heads, key_dim)
    k = randn(batch, tokens, heads, key_dim)
    if normalize_keys:
        k = F.normalize(k, dim=-1)
    v = randn(batch, tokens, value_heads, value_dim)
    if gate == "logsigmoid":
        g = F.logsigmoid(randn(batch, tokens, value_heads, key_dim) + 2.0)
    elif gate == "kimi":
        a_log = torch.linspace(0.0, float(torch.log(torch.tensor(200.0))), value_heads, dtype=torch.float64)
        g = kda_gate(randn(batch, tokens, value_heads, key_dim), a_log, randn(value_heads * key_dim))
    else:
        g = torch.full((batch, tokens, value_heads, key_dim), float(gate), dtype=torch.float64)
    beta = torch.rand(batch, tokens, value_heads, generator=generator, dtype=torch.float64)
    states = batch if num_states is None else num_states
    initial_state = randn(states, value_heads, key_dim, value_dim)
    inputs = dict(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state)
    return {name: tensor.to(dtype) for name, tensor in inputs.items()}


def run_with_grads(op, inputs: dict[str, torch.Tensor], seed: int = 1, **kwargs):
    """Runs ``op`` and back-propagates a fixed random cotangent through o and the final state.

    Returns:
        ``(o, final_state, grads)`` with grads a dict over :data:`INPUT_NAMES`.
    """
    leaves = {name: tensor.detach().clone().requires_grad_(True) for name, tensor in inputs.items()}
    o, state = op(**leaves, output_final_state=True, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    o_weight = torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o)
    s_weight = torch.randn(state.shape, generator=generator, dtype=torch.float64).to(state)
    ((o * o_weight).sum() + (state * s_weight).sum()).backward()
    return o.detach(), state.detach(), {name: leaves[name].grad for name in INPUT_NAMES}


# The grid of the Triton kernels' GPU tests (forward and training): lengths around the chunk size
# and long ones, key/value sizes, and the gates of packed-sequence tests by id.
GPU_TOKENS = (1, 2, 63, 64, 65, 1000, 4096)
GPU_DIMS = ((64, 64), (64, 128), (128, 64), (128, 128))
GPU_GATES = {"mild": "logsigmoid", "kimi-A200": "kimi", "g-1000": -1000.0}


def kernel_inputs(dtype: torch.dtype, device: str, **shape) -> dict[str, torch.Tensor]:
    """:func:`make_inputs` drawn in float64, then q, k, v, g, beta in ``dtype`` on ``device`` and
    the initial state in float32 (the kernels' state dtype)."""
    inputs = make_inputs(dtype=torch.float64, **shape)
    return {name: x.to(device, dtype if name != "initial_state" else torch.float32) for name, x in inputs.items()}


def gpu_grid_inputs(tokens: int, key_dim: int, value_dim: int, dtype: torch.dtype, device: str):
    """One point of the GPU grid: batch 2, 2 q/k heads shared by 4 value heads."""
    return kernel_inputs(
        dtype, device, batch=2, tokens=tokens, heads=2, value_heads=4, key_dim=key_dim, value_dim=value_dim, seed=tokens
    )


def packed_inputs(lengths: list[int], gate, dtype: torch.dtype, device: str, **shape):
    """Sequences of ``lengths`` packed into one batch row, one initial state each, unnormalised keys
    (for the in-kernel L2 norm); returns ``(inputs, cu_seqlens)``."""
    inputs = kernel_inputs(
        dtype,
        device,
        batch=1,
        tokens=sum(lengths),
        num_states=len(lengths),
        gate=gate,
        normalize_keys=False,
        **shape,
    )
    return inputs, torch.tensor([0, *lengths]).cumsum(0).to(device)


def gpu_varlen_inputs(gate, dtype: torch.dtype, device: str):
    """Packed sequences of 1, 2, 3, 63, 64, 65, 1000 and forty 7-token ones (:func:`packed_inputs`)."""
    lengths = [1, 2, 3, 63, 64, 65, 1000] + [7] * 40
    return packed_inputs(lengths, gate, dtype, device, heads=4, value_heads=8, key_dim=128, value_dim=128)
