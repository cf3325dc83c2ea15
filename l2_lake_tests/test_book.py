"""The book engine against real OKX recordings, the documented checksum rules and a naive reference."""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from collector_tests.harness import reference_file
from l2_lake.book import order_book
from l2_lake.book.order_book import BadLevel, OrderBook
from l2_lake.venues.okx.checksum import checksum_string, okx_checksum
from l2_lake_tests.test_engine import as_lists


def _reference_messages() -> list[dict]:
    lines = reference_file("cryptofeed_OKX_books_only.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def test_all_290_recorded_checksums_verify() -> None:
    books: dict[str, OrderBook] = {}
    verified = 0
    messages = _reference_messages()
    for msg in messages:
        inst_id, data = msg["arg"]["instId"], msg["data"][0]
        if msg["action"] == "snapshot":
            books[inst_id] = OrderBook()
        books[inst_id].apply(data["bids"], data["asks"])
        assert books[inst_id].checksum() == data["checksum"], (inst_id, data["ts"])
        verified += 1
    assert verified == len(messages) == 290


def test_snapshots_reproduced_exactly() -> None:
    """Loading a snapshot gives back the exact levels (strings, order) OKX sent."""
    snapshots = [m for m in _reference_messages() if m["action"] == "snapshot"]
    assert [len(s["data"][0]["bids"]) for s in snapshots] == [72, 121, 400]
    for snap in snapshots:
        data = snap["data"][0]
        book = OrderBook()
        book.apply(data["bids"], data["asks"])
        assert as_lists(book.bids.top(400)) == data["bids"]
        assert as_lists(book.asks.top(400)) == data["asks"]


def test_checksum_string_rules_from_okx_docs() -> None:
    # OKX docs: more than 25 levels interleave bid/ask; shorter sides are skipped once exhausted.
    bids = [["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]]
    asks = [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]]
    assert checksum_string(bids, asks) == "3366.1:7:3366.8:9:3366:6:3368:8"
    asks3 = [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"], ["3372", "8", "3", "4"]]
    assert checksum_string(bids[:1], asks3) == "3366.1:7:3366.8:9:3368:8:3372:8"


def test_checksum_is_signed_32_bit() -> None:
    values = {okx_checksum([[f"{p}.5", "1"]], [[f"{p + 1}", "2"]]) for p in range(200)}
    assert any(v < 0 for v in values) and all(-(2**31) <= v < 2**31 for v in values)


def test_only_top_25_levels_count() -> None:
    bids = [[str(1000 - i), "1"] for i in range(30)]
    asks = [[str(2000 + i), "1"] for i in range(30)]
    changed = [*bids[:29], [bids[29][0], "5"]]
    assert okx_checksum(bids, asks) == okx_checksum(changed, asks)


# -- property test: random update streams against a naive reference book ----------------------

prices = st.integers(min_value=1, max_value=400).map(lambda t: f"{Decimal(t) / 10:f}".rstrip("0").rstrip("."))
sizes = st.one_of(st.just("0"), st.integers(1, 10_000).map(str), st.decimals("0.01", "99", places=2).map(str))
levels = st.lists(st.tuples(prices, sizes).map(lambda ps: [ps[0], ps[1], "0", "1"]), max_size=12)


def _naive_apply(side: dict[str, list[str]], update: list[list[str]]) -> None:
    for level in update:
        if Decimal(level[1]) == 0:
            side.pop(level[0], None)
        else:
            side[level[0]] = level


def _naive_top(side: dict[str, list[str]], descending: bool) -> list[list[str]]:
    return [side[p] for p in sorted(side, key=Decimal, reverse=descending)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(levels, levels), min_size=1, max_size=40))
def test_book_matches_naive_reference(stream: list[tuple[list, list]]) -> None:
    _replay_against_model(stream)


def _replay_against_model(stream: list[tuple[list, list]]) -> None:
    """Apply `stream` to a book and to a dict model: after every update both sides (levels and
    length) equal the model's, and the checksum is OKX's reference checksum of the model's top 25."""
    book = OrderBook()
    model_bids: dict[str, list[str]] = {}
    model_asks: dict[str, list[str]] = {}
    for bids, asks in stream:
        book.apply(bids, asks)
        _naive_apply(model_bids, bids)
        _naive_apply(model_asks, asks)
        expected_bids = _naive_top(model_bids, descending=True)
        expected_asks = _naive_top(model_asks, descending=False)
        assert as_lists(book.bids.top(400)) == expected_bids and len(book.bids) == len(expected_bids)
        assert as_lists(book.asks.top(400)) == expected_asks and len(book.asks) == len(expected_asks)
        assert book.checksum() == okx_checksum(expected_bids[:25], expected_asks[:25])


# -- property test: a price written two ways is a bad level, never a stale or doubled level -------

def _spelled(half_ticks: int, extra_zeros: int) -> str:
    """half_ticks / 2 written with `extra_zeros` trailing zeros: (20, 0) "10", (20, 2) "10.00", (21, 1) "10.50"."""
    text = f"{Decimal(half_ticks) / 2:f}"
    if not extra_zeros:
        return text
    return text + "0" * extra_zeros if "." in text else f"{text}.{'0' * extra_zeros}"


spellings = st.builds(_spelled, st.integers(1, 40), st.integers(0, 2))
spelled_sizes = st.sampled_from(["0", "0.0", "1", "2.5", "7"])
spelled_levels = st.lists(st.tuples(spellings, spelled_sizes).map(lambda ps: [ps[0], ps[1], "0", "1"]), max_size=8)


def _naive_spelled_apply(side: dict[Decimal, list[str]], update: list[list[str]]) -> bool:
    """Apply level by level; False at the first level whose price text differs from the stored one."""
    for level in update:
        value = Decimal(level[0])
        stored = side.get(value)
        if stored is not None and stored[0] != level[0]:
            return False
        if Decimal(level[1]) == 0:
            side.pop(value, None)
        else:
            side[value] = level
    return True


@settings(max_examples=300, deadline=None)
@given(st.lists(spelled_levels, min_size=1, max_size=30))
def test_price_spelled_differently_is_a_bad_level(stream: list[list[list[str]]]) -> None:
    """Insert, update or delete of "10.0" while "10" is stored: BadLevel (the engine then resyncs);
    otherwise the book equals a reference keyed by the price's value."""
    book = OrderBook()
    naive: dict[Decimal, list[str]] = {}
    for update in stream:
        consistent = _naive_spelled_apply(naive, update)
        try:
            book.apply(update, [])
        except BadLevel:
            assert not consistent, f"rejected a consistent update {update}"
            book.clear()  # what a resync does: start again from a fresh snapshot
            naive.clear()
            continue
        assert consistent, f"accepted {update} although a price was written differently"
        assert as_lists(book.bids.top(400)) == [naive[v] for v in sorted(naive, reverse=True)]


def test_delete_spelled_differently_never_leaves_a_stale_level() -> None:
    book = OrderBook()
    book.apply([["100", "1", "0", "1"], ["99.5", "2", "0", "1"]], [])
    for spelled in (["100.0", "0", "0", "0"], ["100.00", "0.0", "0", "0"], ["99.50", "0", "0", "0"]):
        try:
            book.apply([spelled], [])
        except BadLevel as exc:
            assert "written differently" in str(exc)
        else:
            raise AssertionError(f"{spelled} was accepted")


# -- property test: the fast paths (remembered sizes, top-25 bound, deletes) against a dict model -----

deep_prices = st.integers(min_value=1, max_value=120).map(lambda t: f"{Decimal(t) / 4:f}".rstrip("0").rstrip("."))
deep_sizes = st.sampled_from(["0", "0", "0.0", "1", "1.0", "1.50", "2", "25", "0.001"])
deep_levels = st.lists(st.tuples(deep_prices, deep_sizes).map(lambda ps: [ps[0], ps[1], "0", "3"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(deep_levels, deep_levels), min_size=1, max_size=40), st.sampled_from([3, 16_384]))
def test_deep_book_and_checksum_match_dict_model(stream: list[tuple[list, list]], remembered: int) -> None:
    """Books deeper than the 25 checksum levels, sizes seen before and not ("1" / "1.0" / "0.0"), and the
    remembered-size set emptied as it fills: the book equals a dict model after every update, and its
    (cached) checksum equals OKX's reference checksum of the model's top 25."""
    saved = order_book._POSITIVE_SIZES_MAX
    order_book._POSITIVE_SIZES_MAX = remembered
    try:
        _replay_against_model(stream)
    finally:
        order_book._POSITIVE_SIZES_MAX = saved


def test_checksum_follows_changes_at_the_25th_level_only() -> None:
    """The checksum is recomputed when the 25th level changes (size, delete, insert above it), never
    left stale, and a change at the 26th level leaves it as it was."""
    bids = [[str(1000 - i), "1", "0", "1"] for i in range(30)]
    asks = [[str(2000 + i), "1", "0", "1"] for i in range(30)]
    book = OrderBook()
    book.apply(bids, asks)
    for bid_update in ([bids[24][0], "7", "0", "1"], [bids[25][0], "9", "0", "1"], [bids[24][0], "0", "0", "0"],
                       ["975.5", "4", "0", "1"], [bids[0][0], "0", "0", "0"], ["1000", "2", "0", "1"]):
        book.apply([bid_update], [])
        model = {level[0]: level for level in bids}
        _naive_apply(model, [bid_update])
        bids = _naive_top(model, descending=True)
        assert as_lists(book.bids.top(400)) == bids
        assert book.checksum() == okx_checksum(bids[:25], asks[:25]), bid_update
