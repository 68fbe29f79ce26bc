"""Context parallelism for KDA: one long sequence split across the ranks of a process group.

* :func:`context_parallel_chunk_kda`: :func:`kdalib.ops.chunk_kda` with each rank holding a
  contiguous shard of the tokens; forward and backward, packed sequences, initial and final states.
* :class:`ContextParallelKDA`: runs a :class:`kdalib.nn.KimiDeltaAttention` layer that way,
  with the short convolutions' boundary tokens exchanged between ranks.
* :func:`setup_from_env`: the process group and device of one process under ``torchrun``.
* :mod:`kdalib.distributed.cost`: the cost model behind the choice of exchange.

The algorithm and its cost model are in notes/kda.md, section ``kda-context-parallel``.
"""

from kdalib.distributed.chunk import context_parallel_chunk_kda
from kdalib.distributed.launch import setup_from_env
from kdalib.distributed.layer import ContextParallelKDA
from kdalib.distributed.layout import ShardLayout, gather_layout

__all__ = ["ContextParallelKDA", "ShardLayout", "context_parallel_chunk_kda", "gather_layout", "setup_from_env"]
