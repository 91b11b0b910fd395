"""Bad input to ingest (issue 8, point 4): each kind with its exact quarantine reason or error.

Row-level kinds share one ingest run (to keep the module fast): the `ingested` fixture writes one
raw partition per kind, each holding exactly that kind's bad rows plus good rows, and one item
catalogue with every item-level kind. Each test then checks its own partition: (a) every bad
row is in the quarantine with its exact reason, (b) the report counts each reason, (c) raw =
accepted + quarantined, in the report and in the written tables, (d) every good row is in the
accepted table unchanged. Schema-level kinds fail before Spark reads anything, each on its own
tiny lake, with an exact message naming the partition, file, column and types.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from conftest import (
    DAY,
    NOW,
    RAW_COLUMNS,
    RUN_DS,
    at,
    events_table,
    items_table,
    write_lake,
    write_parquet,
)

from jobs.core import io
from jobs.core.config import load_config
from jobs.core.lake import Lake, join
from jobs.daily.ingest import IngestError, run
from jobs.daily.raw_files import SchemaError

COLS = (*RAW_COLUMNS, "slot", "quantity", "propensity")


def ev(
    event_id: str | None,
    ts: dt.datetime | None,
    user: str | None = "u1",
    etype: str | None = "click",
    item: str | None = "a",
    price: float | None = None,
    slot: Any = None,
    quantity: Any = None,
    propensity: float | None = None,
) -> tuple[Any, ...]:
    return (event_id, ts, user, etype, item, price, slot, quantity, propensity)


def good(tag: str, day: int) -> list[tuple[Any, ...]]:
    """Three valid events of a day (a click, a purchase, a search without item)."""
    return [
        ev(f"{tag}-g1", at(1, day), item="a"),
        ev(f"{tag}-g2", at(2, day), etype="purchase", item="b", price=2.0, quantity=1),
        ev(f"{tag}-g3", at(3, day), user="u2", etype="search", item=None),
    ]


def ds_of(day: int) -> str:
    return f"2026-01-{day:02d}"


# ---- the row-level kinds: one raw partition each, ingested together ----------------------------
# kind -> (day, good rows, [(bad row, exact reason)], pyarrow column types to write instead of the
# contract's). Days are in order; the last partition is the one `now` falls in.
OUT = "ts outside partition ds="
CASES: dict[str, tuple[int, list[Any], list[tuple[Any, str]], dict[str, pa.DataType]]] = {
    "unknown event type": (
        1,
        good("type", 1),
        [
            (ev("type-b1", at(4, 1), etype="teleport"), "unknown event_type: teleport"),
            (ev("type-b2", at(5, 1), etype="Click"), "unknown event_type: Click"),
            (ev("type-b3", at(6, 1), etype=None), "null event_type"),
        ],
        {},
    ),
    "duplicate event id": (
        2,
        # a later second copy of dup-4 is good although its earlier copy is bad: nothing valid lost
        [*good("dup", 2), ev("dup-4", at(9, 2), item="b")],
        [
            (ev("dup-g1", at(4, 2), item="b"), "duplicate event_id"),  # same id, later
            (good("dup", 2)[1], "duplicate event_id"),  # an exact copy of a good row
            (ev("dup-4", at(23, 1)), f"{OUT}2026-01-02"),
        ],
        {},
    ),
    "ts outside the partition": (
        3,
        good("out", 3),
        [
            (ev("out-b1", at(23, 2)), f"{OUT}2026-01-03"),
            (ev("out-b2", at(0, 4)), f"{OUT}2026-01-03"),
            (ev("out-b3", at(1, 1) - dt.timedelta(days=400)), f"{OUT}2026-01-03"),
        ],
        {},
    ),
    "negative price": (
        4,
        [*good("price", 4), ev("price-g4", at(5, 4), etype="add_to_cart", price=0.0)],
        [
            (ev("price-b1", at(6, 4), etype="purchase", price=-3.0), "negative price"),
            (ev("price-b2", at(7, 4), etype="add_to_cart", price=-0.01), "negative price"),
        ],
        {},
    ),
    "null user id": (
        5,
        good("user", 5),
        [
            (ev("user-b1", at(4, 5), user=None), "null user_id"),
            (ev("user-b2", at(5, 5), user=""), "empty user_id"),
            (ev("user-b3", at(6, 5), user="  "), "empty user_id"),
        ],
        {},
    ),
    "null event id or ts": (
        6,
        good("req", 6),
        [
            (ev(None, at(4, 6)), "null event_id"),
            (ev("", at(5, 6)), "empty event_id"),
            (ev("req-b3", None), "null ts"),
        ],
        {},
    ),
    "item missing from the catalogue": (
        7,
        good("item", 7),
        [
            (ev("item-b1", at(4, 7), item="zzz"), "item_id not in catalogue"),
            # "neg" is in the raw catalogue but quarantined there (negative price)
            (ev("item-b2", at(5, 7), item="neg"), "item_id not in catalogue"),
        ],
        {},
    ),
    "value that does not fit its column": (
        8,
        # slot arrives as float64 and quantity as int64: whole numbers in range are kept
        [*good("fit", 8), ev("fit-g4", at(4, 8), slot=2.0, quantity=3)],
        [
            (ev("fit-b1", at(5, 8), slot=1.5), "bad type for slot: 1.5"),
            (ev("fit-b2", at(6, 8), quantity=2**40), "bad type for quantity: 1099511627776"),
        ],
        {"slot": pa.float64(), "quantity": pa.int64()},
    ),
    "safe type variants": (
        9,
        # naive millisecond ts (read as UTC), dictionary ids, int64 price, float32 propensity
        [*good("safe", 9), ev("safe-g4", at(4, 9), etype="purchase", price=5, propensity=0.5)],
        [],
        {
            "ts": pa.timestamp("ms"),
            "user_id": pa.dictionary(pa.int32(), pa.string()),
            "price": pa.int64(),
            "propensity": pa.float32(),
        },
    ),
    "propensity outside (0, 1]": (
        10,
        [*good("prop", 10), ev("prop-g4", at(4, 10), propensity=1.0)],
        [
            (ev("prop-b1", at(5, 10), propensity=0.0), "propensity outside (0, 1]"),
            (ev("prop-b2", at(6, 10), propensity=1.5), "propensity outside (0, 1]"),
        ],
        {},
    ),
    "empty day (a zero-row file)": (11, [], [], {}),
    "empty day (no data files)": (12, [], [], {}),
    "ts in the future": (
        13,
        # now = 12:00 and ingest.max_future_seconds = 300: 12:04:59 is accepted, 12:05:01 not
        [*good("future", 13), ev("future-g4", at(12, 13) + dt.timedelta(seconds=299))],
        [
            (ev("future-b1", at(12, 13) + dt.timedelta(seconds=301)), "ts in the future"),
            (ev("future-b2", at(23, 13)), "ts in the future"),
        ],
        {},
    ),
}
FUTURE_NOW = at(12, 13)
RUN1, RUN2 = ds_of(14), ds_of(16)  # run 2 ingests a later empty day on its own

# the catalogue: good items, then one row per item-level kind
GOOD_ITEMS = [("a", "A", "c", 1.0), ("b", "B", "c", 2.0), ("free", "F", "c", 0.0)]
ITEM_CASES = {
    "negative item price": (("neg", "N", "c", -1.0), "negative price"),
    "null item id": ((None, "X", "c", 1.0), "null item_id"),
    "empty item id": (("", "E", "c", 1.0), "empty item_id"),
    "null category": (("nocat", "C", None, 1.0), "null category_id"),
    "duplicate item id": (("a", "A2", "c", 5.0), "duplicate item_id"),  # "A" < "A2": A is kept
}


def _raw_table(rows: list[Any], types: dict[str, pa.DataType]) -> pa.Table:
    """The rows with the contract's types or `types`, plus an unknown column ingest must keep."""
    if "ts" in types and types["ts"].tz is None:  # a naive ts holds the UTC wall clock
        i = COLS.index("ts")
        rows = [(*r[:i], r[i] and r[i].replace(tzinfo=None), *r[i + 1 :]) for r in rows]
    table = events_table(rows, COLS, types)
    return table.append_column("logging_policy", pa.array(["random"] * len(rows), pa.string()))


def _rows(path: str) -> list[dict[str, Any]]:
    """A written partition's rows (ts as UTC datetimes); [] when the partition does not exist."""
    if not os.path.isdir(path):
        return []
    table = pads.dataset(path, format="parquet").to_table()
    ts = table.schema.get_field_index("ts")
    table = table.set_column(ts, "ts", table.column("ts").cast(pa.timestamp("us", tz="UTC")))
    return table.to_pylist()


def _key(row: dict[str, Any] | tuple[Any, ...]) -> tuple[Any, ...]:
    """A raw row, or a written one, as comparable values (numbers as floats: 5 == 5.0). A number
    that did not fit its column is null in the quarantine and kept as text in `_bad_<col>`."""
    if isinstance(row, dict):
        bad = {c: row.get(f"_bad_{c}") for c in COLS}
        row = tuple(row[c] if bad[c] is None else float(bad[c]) for c in COLS)
    return tuple(float(v) if isinstance(v, int | float) else v for v in row)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, spark) -> dict[str, Any]:
    lake = Lake(str(tmp_path_factory.mktemp("bad-input")))
    write_parquet(items_table(GOOD_ITEMS + [row for row, _ in ITEM_CASES.values()]), lake.items)
    for kind, (day, good_rows, bad, types) in CASES.items():
        if kind == "empty day (no data files)":
            os.makedirs(lake.raw_events_ds(ds_of(day)))
        else:
            rows = good_rows + [row for row, _ in bad]
            write_parquet(_raw_table(rows, types), lake.raw_events_ds(ds_of(day)))
    cfg = load_config(overrides=["ingest.max_bad_share=1.0", "spark.shuffle_partitions=1"])
    first = run(lake, RUN1, cfg, now=FUTURE_NOW)
    os.makedirs(lake.raw_events_ds(ds_of(15)))  # a later empty day, ingested on its own
    second = run(lake, RUN2, cfg, now=FUTURE_NOW)
    return {"lake": lake, "report": first, "second": second}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(ingested, kind):
    lake, report = ingested["lake"], ingested["report"]
    day, good_rows, bad, _ = CASES[kind]
    ds = ds_of(day)
    part = report["ingested"][ds]
    accepted = _rows(join(lake.events, f"ds={ds}"))
    quarantined = _rows(join(lake.quarantine, f"ds={ds}"))

    # (a) each bad row, with its exact reason
    got = sorted(((_key(r), r["reject_reason"]) for r in quarantined), key=repr)
    assert got == sorted(((_key(row), reason) for row, reason in bad), key=repr)
    # (b) the report's count per reason
    assert part["reasons"] == dict(Counter(reason for _, reason in bad))
    # (c) raw = accepted + quarantined, in the report and in the tables written
    assert part["raw"] == len(good_rows) + len(bad) == part["accepted"] + part["quarantined"]
    assert (part["accepted"], part["quarantined"]) == (len(accepted), len(quarantined))
    marker = io.read_json(join(lake.events, f"ds={ds}", "_INGEST.json"))
    assert {k: marker[k] for k in part} == part
    # (d) every good row accepted, unchanged (unknown columns too)
    assert sorted(map(_key, accepted), key=repr) == sorted(map(_key, good_rows), key=repr)
    assert {r["logging_policy"] for r in accepted} <= {"random"}


def test_the_run_report_adds_up_and_names_the_empty_days(ingested):
    report = ingested["report"]
    assert sorted(report["ingested"]) == [ds_of(c[0]) for c in CASES.values()]
    assert report["empty_partitions"] == [ds_of(11), ds_of(12)]
    assert report["raw"] == sum(len(c[1]) + len(c[2]) for c in CASES.values())
    assert report["quarantined"] == sum(len(c[2]) for c in CASES.values())
    written = io.read_json(join(ingested["lake"].reports(RUN1), "ingest.json"))
    assert written["ingested"] == report["ingested"] and "error" not in written


def test_an_empty_day_is_an_explicit_zero_row_partition(ingested, spark):
    lake, second = ingested["lake"], ingested["second"]
    # ingested alone (nothing else pending), the later empty day is still reported and written
    assert second["ingested"] == {
        ds_of(15): {"raw": 0, "accepted": 0, "quarantined": 0, "reasons": {}}
    }
    assert second["empty_partitions"] == [ds_of(15)]
    assert second["up_to_date"] == [ds_of(c[0]) for c in CASES.values()]  # not re-ingested
    for day in (11, 12, 15):
        path = join(lake.events, f"ds={ds_of(day)}")
        assert io.read_json(join(path, "_INGEST.json"))["raw"] == 0
        assert not os.path.exists(join(lake.quarantine, f"ds={ds_of(day)}"))
        # readable by Spark and pyarrow as a day without rows, with every column of the table
        df = spark.read.parquet(path)
        assert df.count() == 0
        assert set(COLS) | {"logging_policy"} <= set(df.columns)
        assert pads.dataset(path, format="parquet").count_rows() == 0


@pytest.mark.parametrize("kind", list(ITEM_CASES))
def test_each_kind_of_bad_catalogue_row_is_quarantined_with_its_reason(ingested, kind):
    lake, items = ingested["lake"], ingested["report"]["items"]
    row, reason = ITEM_CASES[kind]
    quarantined = pads.dataset(join(lake.warehouse, "quarantine_items", f"ds={RUN1}")).to_table()
    cols = ["item_id", "title", "category_id", "price"]
    got = [
        tuple(r[c] for c in cols) for r in quarantined.to_pylist() if r["reject_reason"] == reason
    ]
    assert got == [row]
    assert items["reasons"][reason] == 1
    assert items["raw"] == len(GOOD_ITEMS) + len(ITEM_CASES)
    assert items["raw"] == items["accepted"] + items["quarantined"]
    assert items["quarantined"] == quarantined.num_rows == len(ITEM_CASES)
    kept = pads.dataset(join(lake.warehouse, "items", f"ds={RUN1}")).to_table(columns=cols)
    assert sorted(map(tuple, (r.values() for r in kept.to_pylist())), key=repr) == sorted(
        GOOD_ITEMS, key=repr
    )


# ---- too many bad rows ------------------------------------------------------------------------


def test_a_day_above_the_bad_share_fails_the_run_and_keeps_its_quarantine(spark, tmp_path):
    """Per partition: 1 bad of 20 (5%) passes max_bad_share=10%, 2 of 10 (20%) fails the run,
    although the run's overall share (3 of 30, 10%) is not above it."""
    day5 = [ev(f"e{i}", at(1 + i)) for i in range(8)]
    day5 += [ev("n", at(9), user=None), ev("p", at(10), etype="purchase", price=-1.0)]
    day4 = [ev(f"d{i}", at(i, 4)) for i in range(19)] + [ev("x", at(20, 4), etype="teleport")]
    lake = write_lake(tmp_path, day5)
    write_parquet(events_table(day4, COLS), lake.raw_events_ds("2026-01-04"))
    cfg = load_config(overrides=["ingest.max_bad_share=0.1", "spark.shuffle_partitions=1"])

    with pytest.raises(IngestError) as exc:
        run(lake, RUN_DS, cfg, now=NOW)
    message = (
        "ds=2026-01-05: 2 of 10 rows (20.0%) were rejected, above ingest.max_bad_share=10.0%; "
        "reasons: {'negative price': 1, 'null user_id': 1}; "
        f"rows kept in {lake.quarantine}"
    )
    assert str(exc.value) == message
    report = io.read_json(join(lake.reports(RUN_DS), "ingest.json"))
    assert report["error"] == message
    assert report["bad_share"] == pytest.approx(0.1)
    assert report["ingested"]["2026-01-04"]["reasons"] == {"unknown event_type: teleport": 1}
    # the quarantine of both days is written; no accepted rows and no markers, so a rerun retries
    q = {r["event_id"]: r["reject_reason"] for r in _rows(lake.quarantine)}
    assert q == {
        "n": "null user_id",
        "p": "negative price",
        "x": "unknown event_type: teleport",
    }
    assert io.partitions(lake.events) == []


def test_a_catalogue_above_the_bad_share_fails_the_run(spark, tmp_path):
    items = items_table([("a", "A", "c", 1.0), ("b", "B", "c", -2.0)])
    lake = write_lake(tmp_path, [ev("e1", at(1))], items=items)
    quarantine = join(lake.warehouse, "quarantine_items", f"ds={RUN_DS}")
    message = (
        "items: 1 of 2 rows (50.0%) were rejected, above ingest.max_bad_share=5.0%; "
        f"reasons: {{'negative price': 1}}; rows kept in {quarantine}"
    )
    with pytest.raises(IngestError) as exc:
        run(lake, RUN_DS, load_config(overrides=["spark.shuffle_partitions=1"]), now=NOW)
    assert str(exc.value) == message
    assert io.read_json(join(lake.reports(RUN_DS), "ingest.json"))["error"] == message
    assert [r["item_id"] for r in pads.dataset(quarantine).to_table().to_pylist()] == ["b"]
    assert not os.path.exists(join(lake.warehouse, "items", f"ds={RUN_DS}"))
    assert not os.path.exists(lake.events)


# ---- schema-level kinds: a clear error, nothing ingested ---------------------------------------

WHERE = "events partition ds=2026-01-05, file part-0.parquet: "
GOOD5 = good("e", 5)


def _retype(name: str, values: list[Any], typ: pa.DataType):
    def mutate(table: pa.Table) -> pa.Table:
        return table.set_column(table.schema.get_field_index(name), name, pa.array(values, typ))

    return mutate


SCHEMA_CASES = {
    "user_id as int64": (
        _retype("user_id", [1, 1, 2], pa.int64()),
        f"{WHERE}column user_id has type int64, expected string",
    ),
    "event_id as int64": (
        _retype("event_id", [1, 2, 3], pa.int64()),
        f"{WHERE}column event_id has type int64, expected string",
    ),
    "ts as string": (
        _retype("ts", ["2026-01-05 01:00:00", "2026-01-05 02:00", "x"], pa.string()),
        f"{WHERE}column ts has type string, expected timestamp[us, tz=UTC]",
    ),
    "ts in nanoseconds": (
        lambda t: t.set_column(1, "ts", t.column("ts").cast(pa.timestamp("ns", tz="UTC"))),
        f"{WHERE}column ts has type timestamp[ns, tz=UTC], expected timestamp[us, tz=UTC] "
        "(Spark cannot read nanosecond timestamps: write microseconds)",
    ),
    "price as string": (
        _retype("price", [None, "2.0", None], pa.string()),
        f"{WHERE}column price has type string, expected double or another numeric type",
    ),
    "slot as bool": (
        _retype("slot", [True, None, None], pa.bool_()),
        f"{WHERE}column slot has type bool, expected int32 or another numeric type",
    ),
    "missing required column": (
        lambda t: t.drop_columns(["event_type"]),
        f"{WHERE}missing required column(s): event_type",
    ),
    "missing columns and a wrong type": (
        lambda t: _retype("user_id", [1, 1, 2], pa.int64())(t.drop_columns(["ts", "event_id"])),
        f"{WHERE}missing required column(s): event_id, ts; "
        "column user_id has type int64, expected string",
    ),
}


@pytest.mark.parametrize("kind", list(SCHEMA_CASES))
def test_a_wrong_schema_is_a_clear_error_naming_partition_file_column_and_types(
    spark, tmp_path, kind
):
    mutate, message = SCHEMA_CASES[kind]
    lake = write_lake(tmp_path, [])
    write_parquet(mutate(events_table(GOOD5, COLS)), lake.raw_events_ds(DAY))
    with pytest.raises(SchemaError) as exc:
        run(lake, RUN_DS, load_config(), now=NOW)
    assert str(exc.value) == message
    assert isinstance(exc.value, ValueError)  # bad input, as callers catching ValueError expect
    assert io.read_json(join(lake.reports(RUN_DS), "ingest.json"))["error"] == message
    assert not os.path.exists(lake.warehouse + "/events")
    assert not os.path.exists(lake.quarantine)


def test_every_bad_file_is_named_and_good_partitions_do_not_hide_them(spark, tmp_path):
    lake = write_lake(tmp_path, GOOD5[:1])  # ds=2026-01-05/part-0.parquet is fine
    write_parquet(events_table(good("d", 4), COLS), lake.raw_events_ds("2026-01-04"))
    bad = _retype("user_id", [7, 8, 9], pa.int64())(events_table(good("f", 5), COLS))
    write_parquet(bad, lake.raw_events_ds(DAY), "part-1.parquet")
    with open(os.path.join(lake.raw_events_ds(DAY), "notes.txt"), "w") as f:
        f.write("not parquet\n")
    with pytest.raises(SchemaError) as exc:
        run(lake, RUN_DS, load_config(), now=NOW)
    first, second = str(exc.value).split(" | ")
    assert first == (
        "events partition ds=2026-01-05, file notes.txt: not a readable Parquet file ("
        + first.split(" (", 1)[1]
    )
    assert second == (
        "events partition ds=2026-01-05, file part-1.parquet: "
        "column user_id has type int64, expected string"
    )


ITEM_SCHEMA_CASES = {
    "item price as string": (
        lambda t: t.set_column(5, "price", pa.array(["1.0", "2.0"])),
        "items file part-0.parquet: column price has type string, expected double or another "
        "numeric type",
    ),
    "item_id as int64": (
        lambda t: t.set_column(0, "item_id", pa.array([1, 2], pa.int64())),
        "items file part-0.parquet: column item_id has type int64, expected string",
    ),
    "in_stock as int": (
        lambda t: t.set_column(6, "in_stock", pa.array([1, 0], pa.int64())),
        "items file part-0.parquet: column in_stock has type int64, expected bool",
    ),
    "catalogue without category_id": (
        lambda t: t.drop_columns(["category_id"]),
        "items file part-0.parquet: missing required column(s): category_id",
    ),
}


@pytest.mark.parametrize("kind", list(ITEM_SCHEMA_CASES))
def test_a_wrong_catalogue_schema_is_a_clear_error(spark, tmp_path, kind):
    mutate, message = ITEM_SCHEMA_CASES[kind]
    lake = write_lake(tmp_path, GOOD5, items=mutate(items_table()))
    with pytest.raises(SchemaError) as exc:
        run(lake, RUN_DS, load_config(), now=NOW)
    assert str(exc.value) == message
    assert not os.path.exists(join(lake.warehouse, "items"))
    assert not os.path.exists(lake.warehouse + "/events")


def test_an_empty_catalogue_is_a_clear_error(spark, tmp_path):
    lake = write_lake(tmp_path, GOOD5, items=items_table([]))
    with pytest.raises(IngestError, match=f"^the item catalogue {lake.items} has no rows$"):
        run(lake, RUN_DS, load_config(), now=NOW)


def test_the_lake_fixture_is_what_the_cases_claim(tmp_path):
    """Guards the tables the cases write: their types are the ones each case names."""
    lake = Lake(str(tmp_path))
    _, rows, bad, types = CASES["safe type variants"]
    path = write_parquet(_raw_table(rows + [r for r, _ in bad], types), lake.raw_events_ds(DAY))
    schema = pads.dataset(path).schema
    assert {n: schema.field(n).type for n in types} == types
