"""Cost model of the two ways to hand states across ranks (notes/kda.md, section ``kda-context-parallel``).

Every rank's shard acts on the state entering it as ``S -> P S + H`` (per value head, P is
K x K and H is K x V). The ranks can either

* **pass** states along: rank r receives its incoming state from rank r - 1, applies its map
  and sends the result to rank r + 1; the backward passes ``dL/dS`` the other way; or
* **all-gather** every rank's (P, H) and let each rank compose the maps before it (a local
  prefix scan); the backward all-gathers the cotangents (the P are known from the forward).

Per rank and value head, with b bytes per element, a state is ``s = K V b`` and a map
``p + s = (K K + K V) b``. A pass sends and receives ``s`` per direction, whatever the number
of ranks R; a ring all-gather (NCCL's algorithm for it) moves ``(R - 1)(p + s)`` forward and
``(R - 1) s`` backward, and holds ``R (p + s)`` per rank. Both take ``R - 1`` sequential steps:
a hop of the pass, a step of the ring, each followed by one ``K x K`` by ``K x V`` product
(the pass's hop; the all-gather's scan on the last rank). With a per-message latency alpha,
a bandwidth beta and a matmul rate F, the critical path of forward plus backward is

    pass:        (R - 1) (2 alpha + 2 HV s / beta + 2 t)
    all-gather:  (R - 1) (2 alpha + HV (p + 2 s) / beta + 2 t),    t = 2 HV K K V / F

so at K = V the all-gather moves more bytes for the same number of steps at every R, and only
a per-step latency lower than the pass's by more than ``HV p / (2 beta)`` could make it faster.
:func:`cost_table` prints the comparison; :data:`ASSUMED_LINK` is a stated assumption for a
GPU link, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("pass", "all-gather")
KIB = 1024


@dataclass(frozen=True)
class LinkModel:
    """A rank's link, as the model sees it.

    Attributes:
        latency_s: alpha, the time of one message (a hop of the pass, a step of the ring).
        bandwidth: beta, bytes per second one rank sends (and receives) at once.
        matmul_flops: F, floating-point operations per second of the small state products.
    """

    latency_s: float
    bandwidth: float
    matmul_flops: float


#: Assumed for the table: 10 microseconds per message, 100 GB/s per direction, 50 TFLOP/s.
ASSUMED_LINK = LinkModel(latency_s=10e-6, bandwidth=100e9, matmul_flops=50e12)


@dataclass(frozen=True)
class ExchangeCost:
    """One strategy's cost per rank for one context-parallel call, forward and backward.

    Attributes:
        sent_forward, sent_backward: bytes one rank sends (the most any rank sends).
        received_forward, received_backward: bytes one rank receives.
        buffer: bytes one rank holds for the exchange at once.
        steps: sequential message steps on the critical path, per direction.
        seconds_forward, seconds_backward: the critical path under the link model.
    """

    sent_forward: int
    sent_backward: int
    received_forward: int
    received_backward: int
    buffer: int
    steps: int
    seconds_forward: float
    seconds_backward: float

    @property
    def seconds(self) -> float:
        return self.seconds_forward + self.seconds_backward


def exchange_cost(
    strategy: str,
    ranks: int,
    value_heads: int,
    key_dim: int = 128,
    value_dim: int = 128,
    element_bytes: int = 4,
    link: LinkModel = ASSUMED_LINK,
) -> ExchangeCost:
    """The cost of handing states across ``ranks`` ranks by ``strategy`` (one of :data:`STRATEGIES`).

    Raises:
        ValueError: an unknown strategy or a non-positive size.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    for name, value in (("ranks", ranks), ("value_heads", value_heads), ("key_dim", key_dim), ("value_dim", value_dim)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    state = value_heads * key_dim * value_dim * element_bytes
    transition = value_heads * key_dim * key_dim * element_bytes
    apply = 2 * value_heads * key_dim * key_dim * value_dim / link.matmul_flops
    steps = ranks - 1
    if strategy == "pass":
        hop = link.latency_s + state / link.bandwidth + apply
        return ExchangeCost(
            sent_forward=state if ranks > 1 else 0,
            sent_backward=state if ranks > 1 else 0,
            received_forward=state if ranks > 1 else 0,
            received_backward=state if ranks > 1 else 0,
            buffer=2 * state,
            steps=steps,
            seconds_forward=steps * hop,
            seconds_backward=steps * hop,
        )
    forward = steps * (transition + state)
    backward = steps * state
    return ExchangeCost(
        sent_forward=forward,
        sent_backward=backward,
        received_forward=forward,
        received_backward=backward,
        buffer=ranks * (transition + state),
        steps=steps,
        seconds_forward=steps * (link.latency_s + (transition + state) / link.bandwidth + apply),
        seconds_backward=steps * (link.latency_s + state / link.bandwidth + apply),
    )


def cost_table(
    ranks: tuple[int, ...] = (2, 4, 8, 16, 32, 64),
    value_heads: int = 32,
    key_dim: int = 128,
    value_dim: int = 128,
    link: LinkModel = ASSUMED_LINK,
) -> str:
    """A Markdown table: per rank, the bytes each strategy moves (KiB per value head, forward +
    backward, received), the largest buffer (KiB per value head), and the critical path of
    forward + backward in microseconds for ``value_heads`` heads under ``link``."""
    lines = [
        "| ranks | pass: KiB moved per head | all-gather: KiB moved per head | all-gather: buffer KiB per head "
        "| steps | pass: µs | all-gather: µs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count in ranks:
        per_head = {s: exchange_cost(s, count, 1, key_dim, value_dim, link=link) for s in STRATEGIES}
        timed = {s: exchange_cost(s, count, value_heads, key_dim, value_dim, link=link) for s in STRATEGIES}
        moved = {s: (c.received_forward + c.received_backward) // KIB for s, c in per_head.items()}
        lines.append(
            f"| {count} | {moved['pass']:,} | {moved['all-gather']:,} | {per_head['all-gather'].buffer // KIB:,} "
            f"| {count - 1} | {timed['pass'].seconds * 1e6:,.0f} | {timed['all-gather'].seconds * 1e6:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(cost_table())
