"""`homepage serve --workers 2`: several processes answer from one memory-mapped export."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

from support.servers import USERS, get, wait_for, write

from jobs.core.lake import Lake

DS = "2024-07-01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_serve_the_same_export(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    stored = write(lake, DS)
    with open(lake.current, "w") as f:
        f.write(DS + "\n")
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "homepage")
    proc = subprocess.Popen(
        [exe, "serve", "--lake", lake.root, "--port", str(port), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def ready() -> bool:
            try:
                return get(port, "/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=60)
        pids: set[str] = set()
        for _ in range(200):  # new connections: the kernel spreads them over both workers
            status, _, body = get(port, f"/v1/users/{USERS[0]}/homepage")
            assert status == 200 and body == stored[USERS[0].encode()]
            text = get(port, "/metrics")[2].decode()
            pids |= set(re.findall(r'kind="pss",pid="(\d+)"', text))
            if len(pids) == 2:
                break
        assert len(pids) == 2, pids
        # each worker reports its memory; the export is mapped, not copied per worker
        text = get(port, "/metrics")[2].decode()
        rss = int(re.search(r'kind="rss",pid="\d+"} (\d+)', text).group(1))
        pss = int(re.search(r'kind="pss",pid="\d+"} (\d+)', text).group(1))
        assert 0 < pss <= rss
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
