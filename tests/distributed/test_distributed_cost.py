"""The cost model behind the exchange: counted bytes, the critical path, and the tables printed from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdalib.distributed import chunk
from kdalib.distributed.cost import ASSUMED_LINK, KIB, LinkModel, cost_table, exchange_cost

ROOT = Path(__file__).resolve().parents[2]


def test_pass_moves_one_state_each_way_whatever_the_ranks():
    state = 128 * 128 * 4
    for ranks in (2, 8, 64):
        cost = exchange_cost("pass", ranks, value_heads=1)
        assert (cost.sent_forward, cost.received_backward, cost.steps) == (state, state, ranks - 1)


def test_all_gather_moves_every_earlier_map():
    cost = exchange_cost("all-gather", 8, value_heads=1)
    assert cost.received_forward == 7 * (128 * 128 + 128 * 128) * 4  # (R - 1)(P + H)
    assert cost.received_backward == 7 * 128 * 128 * 4  # the cotangents only: P is known
    assert (cost.received_forward + cost.received_backward) // KIB == 1344
    assert cost.buffer == 8 * 2 * 128 * 128 * 4


def test_critical_path_follows_the_formula():
    link = LinkModel(latency_s=1e-5, bandwidth=1e11, matmul_flops=5e13)
    state, apply = 32 * 128 * 128 * 4, 2 * 32 * 128**3 / 5e13
    cost = exchange_cost("pass", 16, value_heads=32, link=link)
    assert cost.seconds == pytest.approx(15 * 2 * (1e-5 + state / 1e11 + apply))
    gathered = exchange_cost("all-gather", 16, value_heads=32, link=link)
    assert gathered.seconds == pytest.approx(15 * (2e-5 + 3 * state / 1e11 + 2 * apply))


def test_pass_is_cheaper_at_equal_key_and_value_dims():
    for ranks in (2, 4, 8, 16, 32, 64):
        passed, gathered = (exchange_cost(s, ranks, value_heads=32) for s in ("pass", "all-gather"))
        assert passed.seconds < gathered.seconds and passed.received_forward < gathered.received_forward


def test_no_exchange_on_one_rank():
    for strategy in ("pass", "all-gather"):
        cost = exchange_cost(strategy, 1, value_heads=4)
        assert cost.seconds == 0.0 and cost.received_forward == 0 and cost.sent_backward == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("ring", 2, 1), "strategy: expected one of"),
        (("pass", 0, 1), "ranks: expected a positive int, got 0"),
        (("pass", 2, 1, 0), "key_dim: expected a positive int, got 0"),
    ],
)
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        exchange_cost(*arguments)


def test_the_printed_tables_are_the_model():
    """The docstring of kdalib.distributed.chunk shows cost_table() as it is; the book's KDA page
    computes it at build time (the ``context-parallel-costs`` directive)."""
    table = cost_table(link=ASSUMED_LINK)
    indented = "\n".join("    " + line for line in table.splitlines())
    assert indented in chunk.__doc__
    assert "```{context-parallel-costs}" in (ROOT / "notes" / "kda.md").read_text()


def test_the_book_table_holds_every_row_of_the_model():
    from kdalib.book.computed import markdown_table_nodes

    table = markdown_table_nodes(cost_table(link=ASSUMED_LINK))
    body = table.next_node(lambda n: n.tagname == "tbody")
    rows = [[entry.astext() for entry in row.children] for row in body.children]
    assert [row[0] for row in rows] == ["2", "4", "8", "16", "32", "64"]
    assert rows[-1][1:3] == ["128", "12,096"]
