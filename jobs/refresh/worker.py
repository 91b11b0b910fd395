"""A resident refresh worker: one process runs intra-day window after window.

A `homepage_refresh` DAG run starts fresh processes: each pays for the interpreter's imports
(Great Expectations alone takes seconds), a Spark JVM and its warm-up (class loading, JIT) on
every window. `homepage refresh --follow` (or `--watermarks-from -`) keeps one process for the
day instead, as a long-running streaming job does: the same steps (`jobs.refresh.run.run`) on a
warm JVM and a warm interpreter, so a window costs its work, not its set-up.

Watermarks come from the clock (`clock_watermarks`: each point of the `refresh.every_minutes`
grid once it has passed by `delay_s`) or from a stream of ISO times, one per line
(`stream_watermarks`, e.g. stdin for a scheduler or the benchmark). Each window's outcome is one
JSON line on stdout. A failed window is reported and, in clock mode, retried before the next one
(a window needs the one before it); skipping a window never loses events, since the next one
reads from its predecessor's watermark minus the allowed lateness.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from jobs.refresh import run as refresh
from jobs.refresh import windows

log = logging.getLogger(__name__)


def preload() -> threading.Thread:
    """Import what every window needs: Spark's Python side now, Great Expectations (seconds of
    pure-Python import) on a background thread while the first window's Spark steps run."""
    importlib.import_module("pyspark.sql")  # first, so the two threads never race for it

    def load() -> None:
        try:
            importlib.import_module("great_expectations")
        except Exception:  # noqa: BLE001 - the pages step imports it again and reports errors
            log.debug("background import of great_expectations failed", exc_info=True)

    thread = threading.Thread(target=load, name="preload-gx", daemon=True)
    thread.start()
    return thread


def clock_watermarks(
    every_minutes: int,
    *,
    delay_s: float = 30.0,
    stop: threading.Event | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Iterator[dt.datetime]:
    """Each grid watermark once `delay_s` has passed since it (so events written just before
    the watermark have landed), starting with the latest one; until `stop` is set."""
    stop = stop or threading.Event()
    last: dt.datetime | None = None
    while not stop.is_set():
        wm = windows.floor_watermark(now() - dt.timedelta(seconds=delay_s), every_minutes)
        if last is None or wm > last:
            last = wm
            yield wm
            continue
        due = last + dt.timedelta(minutes=every_minutes, seconds=delay_s)
        stop.wait(max((due - now()).total_seconds(), 0.05))


def stream_watermarks(stream: IO[str]) -> Iterator[dt.datetime]:
    """One watermark per non-empty line (ISO time), until the stream ends."""
    for line in stream:
        text = line.strip()
        if text:
            yield windows.parse_watermark(text)


def work(
    lake_root: str,
    watermarks: Iterable[dt.datetime],
    *,
    overrides: Any = None,
    config_path: str | None = None,
    emit: Callable[[dict[str, Any]], None],
    retry_failed: bool = False,
    max_attempts: int = 3,
    every_minutes: int = 15,
) -> int:
    """Run each watermark's window (all steps, in this process) and `emit` its outcome:
    {"watermark", "ok", "seconds", "steps" | "error", "attempt"}. Returns the number of failed
    window runs.

    `every_minutes` rounds the watermarks down to the refresh grid. With `retry_failed` (clock
    mode), a window that failed for a reason other than the window itself (nothing published
    yet, a watermark before the export's day) is run again before the next watermark's, up to
    `max_attempts` times: its successor needs its outputs."""
    failed = 0
    retry: tuple[dt.datetime, int] | None = None  # a failed window and its attempts so far
    for wm in watermarks:
        wm = windows.floor_watermark(wm, every_minutes)
        if retry is None:
            todo = [(wm, 0)]
        elif retry[0] == wm:
            todo = [retry]
        else:
            todo = [retry, (wm, 0)]
        retry = None
        for window_wm, tries in todo:
            outcome = run_window(lake_root, window_wm, overrides, config_path)
            outcome["attempt"] = tries + 1
            emit(outcome)
            if outcome["ok"]:
                continue
            failed += 1
            if retry_failed and outcome.get("retryable") and tries + 1 < max_attempts:
                retry = (window_wm, tries + 1)
                break  # its successor needs it: wait for the next tick
    return failed


def run_window(
    lake_root: str, wm: dt.datetime, overrides: Any = None, config_path: str | None = None
) -> dict[str, Any]:
    """One window, every step; the outcome as a JSON-ready dict (errors caught and named)."""
    t0 = time.perf_counter()
    try:
        steps = refresh.run(lake_root, wm, overrides, config_path)
    except Exception as exc:  # noqa: BLE001 - reported per window; the worker carries on
        log.exception("refresh %s failed", windows.stamp(wm))
        return {
            "watermark": wm.isoformat(),
            "ok": False,
            "seconds": round(time.perf_counter() - t0, 3),
            "error": f"{type(exc).__name__}: {exc}",
            # the window itself is invalid (nothing published, before the export's day): a
            # retry cannot help; anything else (I/O, a crash, a lost lock) may pass next time
            "retryable": not isinstance(exc, windows.NoExport | windows.RefreshError),
        }
    return {
        "watermark": wm.isoformat(),
        "ok": True,
        "seconds": round(time.perf_counter() - t0, 3),
        "steps": steps,
    }
