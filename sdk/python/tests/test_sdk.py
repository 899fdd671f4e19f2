"""The SDK against the real daemon, on both backends (the `daemon` fixture) or the embedded one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import eventually
from ledger_sdk import Client, LedgerHandler


def test_batches_gzip_and_reads_back(daemon):
    _, _, key = daemon.tenant()
    client = Client(daemon.url, key, batch_size=50, linger=0.2, service="api", environment="test")
    for i in range(120):
        assert client.send(f"batched {i}", level="INFO", attributes={"i": i})
    assert client.flush(30)
    assert client.stats["sent"] == 120
    assert client.stats["batches"] == 3, client.stats  # 50 + 50 + 20: batching by size, then by linger
    logs = eventually(lambda: len(daemon.logs(key)) == 120 and daemon.logs(key), what="120 logs stored")
    assert {log["service"] for log in logs} == {"api"}
    assert sorted(log["attributes"]["i"] for log in logs) == list(range(120))
    found = list(client.query("batched", page_size=7))
    assert len(found) == 120, "the query helper pages through every match"
    client.close()


def test_messagepack_bodies(embedded):
    _, _, key = embedded.tenant()
    client = Client(embedded.url, key, encoding="msgpack", compression=None, linger=0.05)
    client.send("packed", level="ERROR")
    assert client.flush(30) and client.stats["sent"] == 1
    client.close()


def test_logging_handler_maps_records_and_exceptions(daemon):
    _, _, key = daemon.tenant()
    handler = LedgerHandler(url=daemon.url, api_key=key, linger=0.05, service="worker")
    log = logging.getLogger("sdk.test.handler")
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        log.info("order %s placed", 42, extra={"order_id": 42, "user": {"id": 7}, "odd": object()})
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed")
        log.warning("")
        assert handler.client.flush(30)
    finally:
        log.removeHandler(handler)
    logs = {entry["message"]: entry for entry in eventually(lambda: len(daemon.logs(key)) == 3 and daemon.logs(key))}
    placed = logs["order 42 placed"]
    assert placed["level"] == "INFO" and placed["service"] == "worker"
    assert placed["attributes"]["order_id"] == 42 and placed["attributes"]["user"] == {"id": 7}
    assert placed["attributes"]["logger"] == "sdk.test.handler"
    assert placed["attributes"]["odd"].startswith("<object")
    failed = logs["lookup failed"]
    assert failed["level"] == "ERROR"
    assert failed["exception"]["type"] == "KeyError"
    assert "'missing'" in failed["exception"]["value"]
    assert "Traceback" in failed["exception"]["stacktrace"]
    assert "(empty message)" in logs


def test_the_handler_never_raises_into_the_logging_call(embedded):
    _, _, key = embedded.tenant()
    handler = LedgerHandler(url=embedded.url, api_key=key)
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "%d needs a number", ("not a number",), None)
    handler.emit(record)  # the message cannot be formatted: counted, not raised
    assert handler.client.stats["handler_errors"] == 1
    handler.client.close(0)


def test_429_retry_after_is_honoured(daemon):
    # Two requests a minute: the third batch waits for the Retry-After the daemon gives, then goes through.
    _, _, key = daemon.tenant({"rate_limit_per_minute": 2})
    client = Client(daemon.url, key, batch_size=1, linger=0)
    for i in range(3):
        client.send(f"limited {i}")
    started = time.monotonic()
    assert client.flush(120), client.stats
    waited = time.monotonic() - started
    assert client.stats["sent"] == 3 and client.stats["retries"] >= 1, client.stats
    assert waited >= 1, "the third batch waited for the window"
    assert len(eventually(lambda: len(daemon.logs(key)) == 3 and daemon.logs(key))) == 3
    client.close()


def test_a_daemon_restart_loses_and_doubles_nothing(daemon):
    _, _, key = daemon.tenant()
    client = Client(daemon.url, key, batch_size=20, linger=0.01, max_retry_delay=0.5)
    total = 2000
    sender = threading.Thread(target=lambda: [client.send(f"restart {i}") or time.sleep(0.001) for i in range(total)])
    sender.start()
    time.sleep(0.5)
    daemon.restart()  # SIGTERM mid-stream: 503 while it drains, refused connections until it is back
    sender.join()
    assert client.flush(60), client.stats
    assert client.stats["sent"] == total and client.stats["failed"] == 0, client.stats
    messages = eventually(lambda: (lambda logs: len(logs) >= total and logs)(daemon.logs(key)), what="every log")
    assert len(messages) == total, "none doubled"
    assert {log["message"] for log in messages} == {f"restart {i}" for i in range(total)}
    client.close()


def test_a_full_buffer_drops_the_newest_and_counts_them(embedded):
    # Nothing listens here: the batch in hand is retried while the buffer fills up.
    client = Client("http://127.0.0.1:9", "ledger_x", max_buffer=10, batch_size=1, linger=0)
    accepted = sum(client.send(f"log {i}") for i in range(100))
    stats = client.stats
    assert stats["dropped"] == 100 - accepted and stats["dropped"] >= 89, stats
    assert not client.close(0.2)
    assert client.stats["failed"] >= 10


def test_flush_at_interpreter_exit(daemon):
    _, _, key = daemon.tenant()
    child = textwrap.dedent(f"""
        import logging
        from ledger_sdk import LedgerHandler
        logging.basicConfig(level=logging.INFO, handlers=[LedgerHandler(url={daemon.url!r}, api_key={key!r}, linger=60)])
        for i in range(250):
            logging.info("at exit %d", i)
        # No flush, no close: the interpreter's exit sends them.
    """)
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60, env=dict(os.environ))
    assert len(eventually(lambda: len(daemon.logs(key)) == 250 and daemon.logs(key), what="250 logs")) == 250


def test_a_forked_child_sends_its_own_logs_only(embedded):
    _, _, key = embedded.tenant()
    client = Client(embedded.url, key, linger=60)
    client.send("parent before fork")
    pid = os.fork()
    if pid == 0:  # the child: the parent's queued log is not its to send
        client.send("from the child")
        ok = client.close(30)
        os._exit(0 if ok and client.stats["sent"] == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert client.close(30)
    messages = sorted(log["message"] for log in eventually(lambda: len(embedded.logs(key)) == 2 and embedded.logs(key)))
    assert messages == ["from the child", "parent before fork"]
