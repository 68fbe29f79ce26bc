"""``kdalib bench``: time the KDA operators side by side, print a table, write JSON.

A row's *method* is an operator of :mod:`kdalib.ops.registry` (``naive``, ``chunk``,
``fused_recurrent``, ``fla``, ...), a variant of one (``chunk-c32``: ``chunk`` at C = 32),
or one of two comparisons that are not KDA operators: ``peer``, the CPU path of
flash-linear-attention (its pure-PyTorch ``naive_recurrent_kda``, loaded from the file by
path because importing the ``fla`` package needs triton), and ``sdpa_flash``, PyTorch's
flash SDPA causal attention at the same shapes. Every chunked row also shows the *matmul
floor*: the chunked form's FLOP count at the rate of one large ``torch.matmul`` measured
in the same run.

* :mod:`kdalib.bench.suites`: the shapes, the suites and which methods run on which rows.
* :mod:`kdalib.bench.methods`: the callable behind each method name, the peer's loading.
* :mod:`kdalib.bench.measure`: inputs, timing, the matmul and memory floors, running a suite.
* :mod:`kdalib.bench.report`: the table, the profiles, the targets, the JSON file.
* :mod:`kdalib.bench.command`: the ``kdalib bench`` handler (arguments parsed in :mod:`kdalib.cli`).

Notebook 02 times its rows with the same methods and floors.
"""

from kdalib.bench.measure import bytes_moved, copy_bandwidth, make_problem, run_suite, time_breakdown, time_call
from kdalib.bench.methods import (
    PEER_FILE,
    MethodUnavailable,
    known_methods,
    load_peer,
    read_peer_source,
    resolve_method,
)
from kdalib.bench.report import check_targets, format_table, write_result
from kdalib.bench.suites import CHUNK_SIZES, SUITES, Shape, Suite, applies

__all__ = [
    "CHUNK_SIZES",
    "PEER_FILE",
    "SUITES",
    "MethodUnavailable",
    "Shape",
    "Suite",
    "applies",
    "bytes_moved",
    "check_targets",
    "copy_bandwidth",
    "format_table",
    "known_methods",
    "load_peer",
    "make_problem",
    "read_peer_source",
    "resolve_method",
    "run_suite",
    "time_breakdown",
    "time_call",
    "write_result",
]
