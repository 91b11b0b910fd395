"""The lookup server against a tiny lake, over loopback HTTP with the stdlib client."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest
from support.exports import CORRUPTIONS
from support.servers import DS1, DS2, DS3, get, served_ds, wait_for, write

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from serving_export.export.format import LMDB_FILE
from serving_export.http.server import start_in_thread
from serving_export.publish import publish


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture
def server(lake):
    thread, port, stop = start_in_thread(lake, reload_interval_s=0.05)
    yield port
    stop()
    assert not thread.is_alive()


def test_routes(lake, server):
    port = server
    assert get(port, "/healthz")[:1] == (200,)
    assert get(port, "/readyz")[0] == 503
    assert get(port, "/v1/users/u1/homepage")[0] == 503
    values = write(lake, DS1)
    publish(lake, DS1)
    wait_for(lambda: served_ds(port) == DS1)

    status, headers, body = get(port, "/v1/users/u1/homepage")
    assert status == 200 and body == values[b"u1"]
    assert headers["content-type"] == "application/json" and headers["x-export-ds"] == DS1
    page = orjson.loads(body)
    assert page["ds"] == DS1 and page["model_version"] == f"mv-{DS1}" and page["fallback"] is False
    assert get(port, "/v1/users/a.b@c:d-e_f/homepage")[2] == values[b"a.b@c:d-e_f"]
    assert get(port, "/v1/users/a.b%40c:d-e_f/homepage?x=1")[2] == values[b"a.b@c:d-e_f"]

    status, headers, body = get(port, "/v1/users/nobody/homepage")
    assert (
        status == 200
        and body == values[DEFAULT_PAGE_KEY.encode()]
        and headers["x-fallback"] == "true"
    )
    assert orjson.loads(body)["fallback"] is True

    for bad in ("../etc", "%2e%2e%2fetc", "x" * 129, "%00", "a%20b", "%C3%A9"):
        status, _, body = get(port, f"/v1/users/{bad}/homepage")
        assert status == 400, bad
        assert "user_id" in orjson.loads(body)["error"]
    assert get(port, "/v1/users/" + "x" * 128 + "/homepage")[0] == 200
    assert get(port, "/nope")[0] == 404
    assert get(port, "/v1/users/u1/homepage", method="POST")[0] == 405
    status, headers, body = get(port, "/v1/users/u1/homepage", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(values[b"u1"])

    status, headers, body = get(port, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'homepage_requests_total{route="homepage",status="200"}' in text
    assert 'homepage_requests_total{route="homepage",status="400"} 6' in text
    assert 'homepage_request_seconds_bucket{route="homepage",status="200",le="+Inf"}' in text
    assert 'homepage_worker_memory_bytes{kind="pss"' in text
    assert f'homepage_export_info{{ds="{DS1}"}} 1' in text
    assert 'homepage_reloads_total{result="ok"} 1' in text


def test_keep_alive_pipelining_and_limits(lake, server):
    port = server
    values = write(lake, DS1)
    publish(lake, DS1)
    wait_for(lambda: served_ds(port) == DS1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(3):  # one connection, several requests
        conn.request("GET", "/v1/users/u2/homepage")
        assert conn.getresponse().read() == values[b"u2"]
    conn.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req * 2 + b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 3
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 431")


def test_hot_swap_under_load_and_refusal(lake, server):
    port = server
    write(lake, DS1)
    v2 = write(lake, DS2)
    write(lake, DS3)
    publish(lake, DS1)
    wait_for(lambda: served_ds(port) == DS1)

    seen: set[str] = set()
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(20_000):  # bounded even if stop is never set
            if stop.is_set():
                break
            try:
                conn.request("GET", "/v1/users/u1/homepage")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    failures.append(f"status {resp.status}")
                seen.add(orjson.loads(body)["ds"])
            except Exception as exc:  # noqa: BLE001 - any failure counts
                failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.close()

    clients = [threading.Thread(target=hammer) for _ in range(2)]
    for c in clients:
        c.start()
    time.sleep(0.2)
    publish(lake, DS2)
    wait_for(lambda: DS2 in seen)
    time.sleep(0.2)
    stop.set()
    for c in clients:
        c.join(10)
    assert failures == [] and seen == {DS1, DS2}
    assert get(port, "/v1/users/u1/homepage")[2] == v2[b"u1"]

    # A corrupt export named by CURRENT (bypassing publish) is refused; DS2 keeps serving.
    path = os.path.join(lake.export(DS3), LMDB_FILE)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 3] ^= 0x01
    Path(path).write_bytes(bytes(data))
    assert_current_refused(lake, port, DS3, kept=DS2, kept_values=v2)


def assert_current_refused(
    lake: Lake, port: int, bad_ds: str, *, kept: str, kept_values: dict[bytes, bytes]
) -> None:
    """CURRENT names `bad_ds` behind publish's back: the server counts one refused reload and
    keeps serving `kept` (whose stored values are `kept_values`)."""
    with open(lake.current, "w") as f:
        f.write(bad_ds + "\n")
    wait_for(
        lambda: 'homepage_reloads_total{result="refused"} 1' in get(port, "/metrics")[2].decode()
    )
    assert served_ds(port) == kept
    assert get(port, "/v1/users/u1/homepage")[2] == kept_values[b"u1"]


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_server_refuses_each_corruption_and_keeps_serving(lake, server, kind):
    """CURRENT names a corrupt export (a publish bypassed, or the disk went bad after it): the
    server refuses it, counts the refusal, and keeps serving the export it had."""
    port = server
    v1 = write(lake, DS1)
    publish(lake, DS1)
    wait_for(lambda: served_ds(port) == DS1)
    write(lake, DS2)
    corrupt, _ = CORRUPTIONS[kind]
    corrupt(lake.export(DS2))
    assert_current_refused(lake, port, DS2, kept=DS1, kept_values=v1)
    assert get(port, "/v1/users/nobody/homepage")[2] == v1[DEFAULT_PAGE_KEY.encode()]


def test_slow_and_idle_connections_are_closed(lake, monkeypatch):
    import serving_export.http.server as srv

    monkeypatch.setattr(srv, "HEAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(srv, "IDLE_TIMEOUT_S", 0.3)
    thread, port, stop = start_in_thread(lake, reload_interval_s=0.05)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost:")  # never finishes the head
            assert slow.recv(65536).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert idle.recv(65536).startswith(b"HTTP/1.1 200")
            assert idle.recv(65536) == b""  # closed by the server after the idle timeout
    finally:
        stop()


def test_connection_limit_and_worker_bounds(lake):
    from serving_export.http.server import serve

    write(lake, DS1)
    publish(lake, DS1)
    thread, port, stop = start_in_thread(lake, reload_interval_s=0.05, max_connections=2)
    try:
        wait_for(lambda: served_ds(port) == DS1)
        a = socket.create_connection(("127.0.0.1", port), timeout=5)
        b = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            for s in (a, b):  # both admitted: they are answered
                s.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                data = c.recv(65536)
                assert data.startswith(b"HTTP/1.1 503") and b"connection limit (2 per" in data
        finally:
            a.close()
            b.close()
        wait_for(lambda: get(port, "/healthz")[0] == 200)  # freed slots admit new clients
    finally:
        stop()
    for bad in (0, 65):
        with pytest.raises(ValueError, match="workers must be between 1 and 64"):
            serve(lake, "127.0.0.1", 0, workers=bad)
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        serve(lake, "127.0.0.1", 0, max_connections=0)
