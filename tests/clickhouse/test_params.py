"""Parameter binding in the embedded facade: exact values, no cross-talk between threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from app.clickhouse.params import ParameterError, bind_params

HOSTILE_STRINGS = [
    "plain",
    "it's",
    "back\\slash",
    "\\'; DROP TABLE events; --",
    "tab\there",
    "new\nline\r\n",
    "nul\0byte",
    "{x:String}",
    "/* not a comment */ -- nor this",
    "unicode: Grüße, 東京, 🚀, \u202e reversed",
    "'",
    "\\",
    "",
    "x" * 10_000,
]


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_strings_round_trip_exactly(ch_root, value):
    result = ch_root.query_sync("SELECT {v:String} AS v, length({v:String}) AS n", {"v": value})
    assert result.rows == [[value, len(value.encode())]]


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("UInt32", 4_294_967_295, 4_294_967_295),
        ("Int64", -9_000_000_000, -9_000_000_000),
        ("Float64", 0.1, 0.1),
        ("Float64", -1e300, -1e300),
        ("Array(String)", ["DE", "FR", "it's"], ["DE", "FR", "it's"]),
        ("Array(UInt32)", [], []),
        ("DateTime('UTC')", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02 03:04:05"),
        ("DateTime('UTC')", 1_700_000_000, "2023-11-14 22:13:20"),
        ("Nullable(String)", None, None),
    ],
)
def test_typed_values(ch_root, type_, value, expected):
    assert ch_root.query_sync(f"SELECT {{v:{type_}}}", {"v": value}).scalar() == expected


def test_in_with_array_parameter(ch_root):
    rows = ch_root.query_sync(
        "SELECT number FROM numbers(10) WHERE number IN {xs:Array(UInt64)} ORDER BY number",
        {"xs": [2, 3, 7]},
    ).rows
    assert rows == [[2], [3], [7]]


def test_placeholders_inside_literals_and_comments_are_left_alone():
    sql = "SELECT '{a:String}', `{a:String}` /* {a:String} */, {a:String} -- {a:String}\n"
    assert bind_params(sql, {"a": "v"}) == (
        "SELECT '{a:String}', `{a:String}` /* {a:String} */, CAST('v' AS String) -- {a:String}\n"
    )


def test_missing_parameter_and_odd_types_are_refused():
    with pytest.raises(ParameterError, match="'b' has no value"):
        bind_params("SELECT {b:String}", {})
    with pytest.raises(ParameterError, match="unsupported type"):
        bind_params("SELECT {b:String; DROP}", {"b": "x"})
    with pytest.raises(ParameterError, match="cannot bind"):
        bind_params("SELECT {b:String}", {"b": object()})


def test_concurrent_queries_never_see_each_others_values(ch_root):
    """chDB's own binding mixed values up under threads (360 of 3,000 wrong); ours must not."""

    def one(i: int) -> tuple[int, object]:
        result = ch_root.query_sync(
            "SELECT {x:UInt32} AS v, {s:String} AS s FROM numbers(1)", {"x": i, "s": f"org-{i}"}
        )
        return i, tuple(result.rows[0])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(2000)))
    wrong = [(i, got) for i, got in results if got != (i, f"org-{i}")]
    assert wrong == []
