"""Building blocks of a generated event log, shared by the generator and the simulator.

Event and page codes, the generated-event schema (EVENT_SCHEMA + `logging_policy`), Arrow
column builders that skip Python loops, `EventColumns` (one day's events as integer-coded
numpy columns) and `schedule_visits` (the timing of the journeys inside a session).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyarrow as pa

from jobs.core.lake import EVENT_SCHEMA, EVENT_TYPES
from jobs.inputs.truth import DEVICES

GENERATED_EVENT_SCHEMA = pa.schema([*EVENT_SCHEMA, pa.field("logging_policy", pa.string())])
PAGES = ("home", "item", "search", "checkout")
POLICIES = ("default", "random")
EVENT_CODE = {name: k for k, name in enumerate(EVENT_TYPES)}
PAGE_CODE = {name: k for k, name in enumerate(PAGES)}
MICROS = 1_000_000  # microseconds per second


class SessionTable(Protocol):
    """Sessions (or visits) of one day: per session its user, start (µs) and device."""

    user: np.ndarray
    start: np.ndarray
    device: np.ndarray


def id_array(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Fixed-width string ids `prefix` + zero-padded numbers, built straight into Arrow buffers."""
    n = int(numbers.size)
    head = np.frombuffer(prefix.encode(), np.uint8)
    row_width = head.size + width
    buf = np.empty((n, row_width), np.uint8)
    buf[:, : head.size] = head
    x = numbers.astype(np.int64)
    for k in range(row_width - 1, head.size - 1, -1):  # one pass per digit position
        buf[:, k] = 48 + x % 10
        x //= 10
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(row_width)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def fixed_width_strings(ids: np.ndarray) -> pa.Array:
    """An Arrow string array from equal-length ASCII numpy strings (ids), without a Python loop."""
    width = ids.dtype.itemsize // 4
    raw = ids.astype(f"S{width}")
    offsets = np.arange(ids.size + 1, dtype=np.int32) * np.int32(width)
    return pa.StringArray.from_buffers(ids.size, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes()))


def string_array(values: list[str] | tuple[str, ...]) -> pa.Array:
    """An Arrow string array from a list of str, built from buffers."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    data = pa.py_buffer(b"".join(encoded))
    return pa.StringArray.from_buffers(len(encoded), pa.py_buffer(offsets), data)


def take(vocab: pa.Array, idx: np.ndarray) -> pa.Array:
    """vocab[idx] with null where idx < 0."""
    null = idx < 0
    return vocab.take(pa.array(np.where(null, 0, idx), mask=null))


def nullable(values: np.ndarray, null: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.array(values, mask=null, type=typ)


def events_table(
    c: dict[str, np.ndarray],
    *,
    event_ids: pa.Array,
    users: pa.Array,
    sessions: pa.Array,
    item_vocab: pa.Array,
    carousel_vocab: pa.Array,
    queries: pa.Array,
    policies: list[str] | tuple[str, ...],
) -> pa.Table:
    """One day's events in `GENERATED_EVENT_SCHEMA` from their integer codes `c` (in ts order):
    the id, user, session and query columns as given, the rest decoded here (item/carousel codes
    into the vocabularies, -1 = null; slot/position/quantity 0 = null; propensity/price nan =
    null; policy codes into `policies`)."""
    arrays = [
        event_ids,
        pa.array(c["ts"], pa.timestamp("us", tz="UTC")),
        users,
        sessions,
        string_array(EVENT_TYPES).take(pa.array(c["etype"])),
        take(item_vocab, c["item"]),
        take(carousel_vocab, c["carousel"]),
        nullable(c["slot"].astype(np.int32), c["slot"] == 0, pa.int32()),
        nullable(c["position"].astype(np.int32), c["position"] == 0, pa.int32()),
        nullable(c["propensity"], np.isnan(c["propensity"]), pa.float64()),
        string_array(PAGES).take(pa.array(c["page"])),
        string_array(DEVICES).take(pa.array(c["device"])),
        queries,
        nullable(c["quantity"].astype(np.int32), c["quantity"] == 0, pa.int32()),
        nullable(c["price"], np.isnan(c["price"]), pa.float64()),
        take(string_array(policies), c["policy"]),
    ]
    return pa.Table.from_arrays(arrays, schema=GENERATED_EVENT_SCHEMA)


class EventColumns:
    """Columns of one day's events, collected from several parts (integer codes, -1/0/nan = null)."""

    FILL = {
        "item": -1,
        "carousel": -1,
        "slot": 0,
        "position": 0,
        "propensity": np.nan,
        "query": -1,
        "quantity": 0,
        "price": np.nan,
        "policy": -1,
    }

    def __init__(self, sess: SessionTable) -> None:
        self.sess = sess
        self.parts: list[dict[str, np.ndarray]] = []

    def add(
        self, etype: str, page: str, ts: np.ndarray, session: np.ndarray, **cols: np.ndarray
    ) -> None:
        n = ts.size
        part = {
            "ts": ts,
            "session": session,
            "user": self.sess.user[session],
            "device": self.sess.device[session],
            "etype": np.full(n, EVENT_CODE[etype], np.int8),
            "page": np.full(n, PAGE_CODE[page], np.int8),
        }
        for name, fill in self.FILL.items():
            part[name] = cols.get(name, np.full(n, fill))
        self.parts.append(part)

    def columns(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}


def schedule_visits(
    sess: SessionTable, session: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Start time of each journey (sorted by session) and each session's checkout time.

    Journeys follow each other 45 s + Exp(90 s) apart, compressed so that the last starts at most
    45 minutes into the session; checkout is 1-4 minutes after the last journey's start, later
    than any of its add-to-carts (<= 40 s after a start). A session so lasts < 50 minutes.
    """
    gaps = 45.0 + rng.exponential(90.0, session.size)
    cum = np.cumsum(gaps)
    first = np.searchsorted(session, session)
    offset = cum - cum[first] + gaps[first]
    total = np.bincount(session, weights=gaps, minlength=sess.user.size)
    offset *= np.minimum(1.0, 2700.0 / np.maximum(total, 1.0))[session]
    start = sess.start[session] + ((20.0 + offset) * MICROS).astype(np.int64)
    last = np.zeros(sess.user.size, np.int64)
    np.maximum.at(last, session, start)
    wait = 60.0 + np.minimum(rng.exponential(60.0, last.size), 180.0)
    return start, last + (wait * MICROS).astype(np.int64)
