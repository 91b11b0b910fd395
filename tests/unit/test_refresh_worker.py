"""The resident refresh worker's scheduling: the clock's watermarks, a stream's, and retries.

The worker running real windows (a process with a warm JVM) is tested end to end in
tests/e2e/test_refresh.py (`test_a_resident_worker_runs_windows_one_after_another`)."""

from __future__ import annotations

import datetime as dt
import io
import threading

import pytest

from jobs.refresh import run as refresh
from jobs.refresh import windows
from jobs.refresh import worker as refresh_worker


def t(hour: int, minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, 15, hour, minute, second, tzinfo=dt.UTC)


class FakeClock:
    """A clock that jumps forward whenever the worker waits (no real sleeping)."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_clock_yields_each_grid_watermark_once_it_has_passed_by_the_delay():
    clock = FakeClock(t(10, 7))

    class Jump(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:  # the worker's sleep
            clock.now += dt.timedelta(seconds=timeout or 0)
            return self.is_set()

    stop = Jump()
    gen = refresh_worker.clock_watermarks(15, delay_s=30, stop=stop, now=clock)
    assert next(gen) == t(10, 0)  # the latest grid point, at once
    assert next(gen) == t(10, 15)  # then each next one, 30 s after it
    assert clock.now == t(10, 15, 30)
    clock.now = t(11, 2)  # a long window: the grid points it missed are not replayed
    assert next(gen) == t(11, 0)
    stop.set()
    with pytest.raises(StopIteration):
        next(gen)


def test_a_stream_gives_one_watermark_per_line():
    text = "2026-01-15T10:15Z\n\n  2026-01-15T10:30:00+00:00 \n"
    assert list(refresh_worker.stream_watermarks(io.StringIO(text))) == [t(10, 15), t(10, 30)]
    with pytest.raises(windows.RefreshError, match="not an ISO time"):
        list(refresh_worker.stream_watermarks(io.StringIO("soon\n")))


def fake_runs(monkeypatch, fail: dict[dt.datetime, list[Exception]]) -> list[dt.datetime]:
    """`refresh.run` replaced: windows in `fail` raise their exceptions in turn; returns the
    watermarks run, in order."""
    ran: list[dt.datetime] = []

    def run(lake_root, wm, overrides=None, config_path=None, progress=None):
        ran.append(wm)
        errors = fail.get(wm)
        if errors:
            raise errors.pop(0)
        return {"publish": {"published": True}}

    monkeypatch.setattr(refresh, "run", run)
    return ran


def test_the_worker_runs_each_window_rounded_to_the_grid_and_reports_each(monkeypatch):
    ran = fake_runs(monkeypatch, {})
    out: list[dict] = []
    failed = refresh_worker.work("lake", [t(10, 16), t(10, 31)], emit=out.append)
    assert failed == 0
    assert ran == [t(10, 15), t(10, 30)]
    assert [o["watermark"] for o in out] == [t(10, 15).isoformat(), t(10, 30).isoformat()]
    assert all(o["ok"] and o["attempt"] == 1 for o in out)


def test_a_failed_window_is_retried_before_the_next_one_in_clock_mode(monkeypatch):
    ran = fake_runs(monkeypatch, {t(10, 15): [OSError("disk hiccup")]})
    out: list[dict] = []
    failed = refresh_worker.work(
        "lake", [t(10, 15), t(10, 30), t(10, 45)], emit=out.append, retry_failed=True
    )
    assert failed == 1
    # 10:15 failed; at the next tick it runs again (and passes), then 10:30's window
    assert ran == [t(10, 15), t(10, 15), t(10, 30), t(10, 45)]
    assert out[0]["ok"] is False and out[0]["retryable"] and "disk hiccup" in out[0]["error"]
    assert out[1]["ok"] and out[1]["attempt"] == 2


def test_a_window_that_cannot_run_is_not_retried_and_retries_are_bounded(monkeypatch):
    ran = fake_runs(
        monkeypatch,
        {
            t(10, 15): [windows.NoExport("nothing is published")],
            t(10, 30): [OSError("a"), OSError("b"), OSError("c"), OSError("d")],
        },
    )
    out: list[dict] = []
    ticks = [t(10, 15), t(10, 30), t(10, 45), t(11, 0), t(11, 15)]
    refresh_worker.work("lake", ticks, emit=out.append, retry_failed=True, max_attempts=3)
    assert out[0]["retryable"] is False  # nothing published: the next tick moves on
    # 10:30 runs 3 times in all (attempts 1-3), then the worker moves on
    assert ran == [t(10, 15), t(10, 30), t(10, 30), t(10, 30), t(11, 0), t(11, 15)]
    assert [o["attempt"] for o in out if o["watermark"] == t(10, 30).isoformat()] == [1, 2, 3]


def test_without_retries_the_worker_counts_failures_and_carries_on(monkeypatch):
    ran = fake_runs(monkeypatch, {t(10, 15): [RuntimeError("boom")]})
    out: list[dict] = []
    failed = refresh_worker.work("lake", [t(10, 15), t(10, 30)], emit=out.append)
    assert failed == 1 and ran == [t(10, 15), t(10, 30)]
    assert [o["ok"] for o in out] == [False, True]
