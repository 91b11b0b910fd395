"""The evaluation lake lock: a second writer waits until the first is done."""

from __future__ import annotations

import threading
import time

from jobs.experiments.evaluation_lake import locked


def test_a_second_writer_waits_for_the_first(tmp_path):
    path = str(tmp_path / "_eval" / "2026-01-10-abcdef12")
    said: list[str] = []
    entered = threading.Event()

    def second() -> None:
        with locked(path, say=said.append):
            entered.set()

    with locked(path):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert not entered.is_set()  # blocked while the first holds the lock
        assert said == [f"waiting for another run using {path} ..."]
    t.join(5)
    assert entered.is_set()


def test_readers_share_the_lock(tmp_path):
    path = str(tmp_path / "lake")
    with locked(path, shared=True), locked(path, shared=True, say=lambda m: 1 / 0):
        pass  # a second shared holder neither waits nor says anything
