"""What readers of the book call the things kdalib's records name internally: the one place.

Recorded results key their rows by the names code uses (``chunk_pytorch``, ``fla_bounded``,
``triton_bf16_graph``, ``gated_deltanet``); the book's tables and pictures show these names
instead. A test checks that every method ``kdalib bench`` knows and every training path and
mechanism of the synthetic tasks has one. Names of methods that only older records hold stay
here as long as a record does.
"""

from __future__ import annotations

#: What a reader calls each ``kdalib bench`` method.
METHOD_NAMES = {
    "triton": "kdalib, Triton",
    "chunk": "kdalib chunk_kda (its default path)",
    "chunk-c32": "kdalib chunk_kda, chunks of 32",
    "chunk_pytorch": "kdalib, PyTorch",
    "naive": "kdalib token loop (reference)",
    "naive_chunk": "kdalib chunkwise, step by step (reference)",
    "fused_recurrent": "kdalib recurrent form",
    "fused_recurrent_pytorch": "kdalib recurrent form, PyTorch loop",
    "fla": "FLA",
    # No longer a method (the bounded gate is a row's gate): the rows of notebooks/results/cuda/bench.json
    # that timed FLA's in-kernel bounded gate on the raw input with zero A_log and dt_bias.
    "fla_bounded": "FLA, bounded gate in kernel",
    "fla_fused_recurrent": "FLA recurrent form",
    "peer": "FLA reference (PyTorch loop)",
    "sdpa": "softmax attention (SDPA)",
    "sdpa_flash": "softmax attention (flash)",
    "triton_states64": "kdalib, Triton, states every 64 tokens kept",
    "verify": "kdalib verify step (k tokens in one launch)",
    "single_steps": "kdalib, k single decoding steps",
}

#: What a reader calls each gate a row may be timed with.
GATE_NAMES = {"mild": "mild gate", "kimi": "Kimi softplus gate", "bounded": "bounded gate"}


#: The ways a synthetic-task training step can run (:data:`kdalib.tasks.report_grid.STEP_PATHS`).
STEP_PATH_NAMES = {
    "pytorch": "PyTorch, fp32",
    "triton": "Triton, fp32",
    "triton_graph": "Triton + CUDA graphs, fp32",
    "triton_bf16_graph": "Triton + CUDA graphs, bf16",
}

#: The update rules the synthetic tasks compare (:data:`kdalib.tasks.MIXER_KINDS`).
MECHANISM_NAMES = {
    "linear": "linear attention",
    "deltanet": "DeltaNet",
    "gated_deltanet": "Gated DeltaNet",
    "kda": "KDA",
    "mamba2": "Mamba-2 rule",
}
