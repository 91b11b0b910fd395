"""The lake: where every table lives, and the input contract's schemas.

A lake is a directory, or on a cluster a URI that Spark and pyarrow understand. Input tables
(written by `homepage generate` / `homepage import` or by the site's own loaders):

    events/ds=YYYY-MM-DD/*.parquet     raw events (contract below)
    items/*.parquet                    item catalogue (one row per item, listed on `first_seen`)
    item_changes/*.parquet             optional dated price and stock changes
    users/*.parquet                    optional profiles
    carousels/*.parquet                optional operator-curated carousels (optionally dated)
    _truth/                            generator's ground-truth user model (generated lakes only)

Every date in the input tables is the day a fact became known: a fact dated d is known at the
end of day d, so the run for `ds` (whose events are the days before `ds`) reads only the facts
dated before `ds`. An item is in the run's catalogue when its `first_seen` is before `ds` (or null:
listed since before the data); its price and stock are the catalogue row's, overridden by its
latest `item_changes` dated before `ds` (a null price or stock in a change leaves that column as
it was). A curated carousel is a candidate when its `valid_from` is before `ds` and its
`valid_to` (the last day it may be shown) is on or after `ds`; a null date is open.

Pipeline outputs (each partitioned by the run's `ds`, overwritten on re-run):

    warehouse/events/ds=...            accepted events (one partition per event day)
    warehouse/quarantine/ds=...        rejected rows with `reject_reason`
    warehouse/features/<table>/ds=...  feature tables for the run's ds
    warehouse/models/ds=.../<cfg hash> model bundles trained for the run's ds (one per config)
    warehouse/candidates/ds=...        scored carousel candidates
    exports/ds=.../                    pages.parquet, pages.lmdb, MANIFEST.json
    exports/CURRENT                    the published ds
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass

import pyarrow as pa

# The input tables of a lake (`_truth` only in generated lakes), copied or replaced as a whole.
INPUT_TABLES: tuple[str, ...] = ("events", "items", "item_changes", "users", "carousels", "_truth")
EVENT_TYPES: tuple[str, ...] = ("impression", "view", "click", "add_to_cart", "purchase", "search")
DS_FORMAT = "%Y-%m-%d"
DEFAULT_PAGE_KEY = "__default__"

# Column -> Arrow type. Required columns must be present; optional ones are added as nulls.
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("event_type", pa.string()),
        ("item_id", pa.string()),
        ("carousel_id", pa.string()),
        ("slot", pa.int32()),
        ("position", pa.int32()),
        ("propensity", pa.float64()),
        ("page", pa.string()),
        ("device", pa.string()),
        ("query", pa.string()),
        ("quantity", pa.int32()),
        ("price", pa.float64()),
    ]
)
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("event_id", "ts", "user_id", "event_type")

ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category_id", pa.string()),
        ("category_path", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("in_stock", pa.bool_()),
        ("has_image", pa.bool_()),
        ("first_seen", pa.date32()),
    ]
)
REQUIRED_ITEM_COLUMNS: tuple[str, ...] = ("item_id", "category_id")

# A dated change of an item's price and/or stock (null: unchanged), known at the end of `changed_on`.
ITEM_CHANGE_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("changed_on", pa.date32()),
        ("price", pa.float64()),
        ("in_stock", pa.bool_()),
    ]
)
REQUIRED_ITEM_CHANGE_COLUMNS: tuple[str, ...] = ("item_id", "changed_on")

CAROUSEL_SCHEMA = pa.schema(
    [
        ("carousel_id", pa.string()),
        ("title", pa.string()),
        ("family", pa.string()),
        ("item_ids", pa.list_(pa.string())),  # explicit item list, or null when `rule` is set
        ("rule", pa.string()),  # e.g. "category:<id>", "brand:<name>", "new", "on_sale"
        ("immutable", pa.bool_()),  # True: the operator's item order is kept as is
        ("valid_from", pa.date32()),  # known from the end of this day (null: always)
        ("valid_to", pa.date32()),  # the last day it may be shown (null: no end)
    ]
)

_DS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_ds(value: str) -> dt.date:
    """Parse a `YYYY-MM-DD` partition date, with an error that names the bad value."""
    if not isinstance(value, str) or not _DS_RE.match(value):
        raise ValueError(f"ds must look like YYYY-MM-DD, got {value!r}")
    try:
        return dt.datetime.strptime(value, DS_FORMAT).date()
    except ValueError as exc:
        raise ValueError(f"ds {value!r} is not a real date") from exc


def fmt_ds(day: dt.date) -> str:
    return day.strftime(DS_FORMAT)


def shift_ds(ds: str, days: int) -> str:
    return fmt_ds(parse_ds(ds) + dt.timedelta(days=days))


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """A local filesystem path for a local URI (file:// or plain path)."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if "://" in uri:
        raise ValueError(f"{uri!r} is not a local path; this step needs local storage")
    return uri


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


@dataclass(frozen=True)
class Lake:
    """Paths of one lake. `root` may be a local path or a URI (s3a://, hdfs://)."""

    root: str

    def __post_init__(self) -> None:
        if not self.root:
            raise ValueError("lake path is empty")
        if is_local(self.root):
            object.__setattr__(self, "root", os.path.abspath(local_path(self.root)))

    # input tables
    @property
    def raw_events(self) -> str:
        return join(self.root, "events")

    def raw_events_ds(self, ds: str) -> str:
        return join(self.raw_events, f"ds={ds}")

    @property
    def items(self) -> str:
        return join(self.root, "items")

    @property
    def item_changes(self) -> str:
        return join(self.root, "item_changes")

    @property
    def users(self) -> str:
        return join(self.root, "users")

    @property
    def carousels(self) -> str:
        return join(self.root, "carousels")

    @property
    def truth(self) -> str:
        return join(self.root, "_truth")

    # pipeline outputs
    @property
    def warehouse(self) -> str:
        return join(self.root, "warehouse")

    @property
    def refresh_logs(self) -> str:
        """Intra-day refresh logs, `ds=<base>/wm=<stamp>/` (jobs.refresh)."""
        return join(self.warehouse, "refresh")

    @property
    def events(self) -> str:
        return join(self.warehouse, "events")

    @property
    def quarantine(self) -> str:
        return join(self.warehouse, "quarantine")

    def feature(self, table: str, ds: str) -> str:
        return join(self.warehouse, "features", table, f"ds={ds}")

    def models(self, ds: str) -> str:
        return join(self.warehouse, "models", f"ds={ds}")

    def candidates(self, ds: str) -> str:
        return join(self.warehouse, "candidates", f"ds={ds}")

    def reports(self, ds: str) -> str:
        return join(self.warehouse, "reports", f"ds={ds}")

    @property
    def exports(self) -> str:
        return join(self.root, "exports")

    def export(self, ds: str) -> str:
        return join(self.exports, f"ds={ds}")

    @property
    def current(self) -> str:
        return join(self.exports, "CURRENT")

    @property
    def mlflow_dir(self) -> str:
        return join(self.root, "_mlflow")


def list_partitions(table_dir: str) -> list[str]:
    """Sorted `ds` values of a local partitioned table (empty when it does not exist)."""
    path = local_path(table_dir)
    if not os.path.isdir(path):
        return []
    out = []
    for name in os.listdir(path):
        if name.startswith("ds=") and _DS_RE.match(name[3:]):
            out.append(name[3:])
    return sorted(out)
