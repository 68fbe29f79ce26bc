"""Bad input gets a ValueError that names the argument and what was expected."""

from __future__ import annotations

import warnings

import pytest
import torch
from kda_test_utils import cpu_operators, make_inputs

from kdalib.ops import OPERATORS as REGISTRY
from kdalib.ops import chunk_kda, fused_recurrent_kda, kda

OPERATORS = [*cpu_operators().values(), kda]
CHUNKED = [op.function for op in REGISTRY.values() if op.chunked and op.supports("cpu")] + [kda]


def _base():
    return make_inputs(tokens=6, heads=2, value_heads=4, key_dim=8, value_dim=5, dtype=torch.float32)


def _packed():
    return make_inputs(tokens=6, heads=2, key_dim=8, value_dim=5, dtype=torch.float32, num_states=2)


# (id, how to corrupt the inputs, extra kwargs, message fragments that must appear)
BAD_INPUTS = [
    ("k-shape", lambda x: x.update(k=x["k"][:, :5]), {}, ["k:", "[B, T, H, K]"]),
    ("v-rank", lambda x: x.update(v=x["v"][0]), {}, ["v:", "[B, T, HV, V]"]),
    ("q-rank", lambda x: x.update(q=x["q"][0]), {}, ["q:", "[B, T, H, K]"]),
    (
        "hv-not-multiple",
        lambda x: x.update(
            v=torch.zeros(1, 6, 3, 5), g=torch.zeros(1, 6, 3, 8), beta=torch.zeros(1, 6, 3), initial_state=None
        ),
        {},
        ["v:", "multiple of H = 2"],
    ),
    ("g-shape", lambda x: x.update(g=x["g"][..., :4]), {}, ["g:", "[B, T, HV, K]"]),
    ("beta-shape", lambda x: x.update(beta=x["beta"].unsqueeze(-1)), {}, ["beta:", "[B, T, HV]"]),
    ("integer-q", lambda x: x.update(q=x["q"].long()), {}, ["q:", "floating"]),
    ("integer-beta", lambda x: x.update(beta=x["beta"].int()), {}, ["beta:", "floating"]),
    (
        "state-wrong-n",
        lambda x: x.update(initial_state=torch.zeros(3, 4, 8, 5)),
        {},
        ["initial_state:", "[N, HV, K, V]"],
    ),
    (
        "state-wrong-kv",
        lambda x: x.update(initial_state=torch.zeros(1, 4, 5, 8)),
        {},
        ["initial_state:", "[1, 4, 8, 5]"],
    ),
    ("nan-scale", lambda x: None, {"scale": float("nan")}, ["scale:", "finite"]),
    ("mixed-devices", lambda x: x.update(q=x["q"].to("meta")), {}, ["one device"]),
]

BAD_PACKING = [
    ("not-starting-at-0", torch.tensor([1, 3, 6]), ["cu_seqlens:", "start at 0"]),
    ("not-ending-at-T", torch.tensor([0, 3, 5]), ["cu_seqlens:", "end at T = 6"]),
    ("not-increasing", torch.tensor([0, 3, 3, 6]), ["cu_seqlens:", "increasing"]),
    ("float-offsets", torch.tensor([0.0, 3.0, 6.0]), ["cu_seqlens:", "integer"]),
    ("two-dimensional", torch.tensor([[0, 3, 6]]), ["cu_seqlens:", "[N + 1]"]),
]


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.__name__)
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_name_the_argument(op, case):
    _, corrupt, kwargs, fragments = case
    inputs = _base()
    corrupt(inputs)
    with pytest.raises(ValueError) as error:
        op(**inputs, **kwargs)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.__name__)
@pytest.mark.parametrize("case", BAD_PACKING, ids=[c[0] for c in BAD_PACKING])
def test_bad_cu_seqlens(op, case):
    _, offsets, fragments = case
    with pytest.raises(ValueError) as error:
        op(**_packed(), cu_seqlens=offsets)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.__name__)
def test_cu_seqlens_needs_batch_of_one(op):
    inputs = make_inputs(batch=2, tokens=6, key_dim=8, value_dim=5, num_states=2)
    with pytest.raises(ValueError, match="cu_seqlens: packed sequences need batch size B = 1, got B = 2"):
        op(**inputs, cu_seqlens=torch.tensor([0, 3, 6]))


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.__name__)
def test_packed_initial_state_needs_one_state_per_sequence(op):
    inputs = _packed()
    with pytest.raises(ValueError, match=r"initial_state: expected shape \[N, HV, K, V\] = \[3, 2, 8, 5\]"):
        op(**inputs, cu_seqlens=torch.tensor([0, 1, 3, 6]))


@pytest.mark.parametrize("chunk_size", [0, 8, 48, 128, True, 64.0])
@pytest.mark.parametrize("op", CHUNKED, ids=lambda op: op.__name__)
def test_invalid_chunk_size(op, chunk_size):
    with pytest.raises(ValueError, match="chunk_size: expected one of"):
        op(**_base(), chunk_size=chunk_size)


def test_valid_inputs_pass():
    for op in OPERATORS:
        o, state = op(**_base(), output_final_state=True)
        assert o.shape == (1, 6, 4, 5) and state.shape == (1, 4, 8, 5)


def test_inputs_that_look_head_first_warn():
    """[B, H, T, K] inputs passed as [B, T, H, K] have T and H swapped; fewer tokens than heads is
    what that looks like (packed inputs and single tokens are not taken for it)."""
    head_first = make_inputs(batch=1, tokens=4, heads=8, key_dim=8, value_dim=8)
    with pytest.warns(UserWarning, match=r"T = 4 tokens and H = 8 heads .* q.transpose\(1, 2\)"):
        chunk_kda(**head_first)
    token_first = make_inputs(batch=1, tokens=8, heads=8, key_dim=8, value_dim=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunk_kda(**token_first)
        fused_recurrent_kda(**{name: x[:, :1] if name != "initial_state" else x for name, x in head_first.items()})
        chunk_kda(**head_first, cu_seqlens=torch.tensor([0, 4]))
        chunk_kda(**{name: x[:, :1] if name != "initial_state" else x for name, x in head_first.items()})
