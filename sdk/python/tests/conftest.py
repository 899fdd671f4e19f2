"""The real daemon for the SDK's tests: the `ledger` binary (LEDGER_BINARY, default target/debug/ledger),
started on free ports against a fresh backend, embedded (a temporary directory) or shared (fresh PostgreSQL
databases and Redis key prefix on LEDGER_TEST_POSTGRES / LEDGER_TEST_REDIS), as the Rust tests do."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from typing import Any, Dict, List, Optional, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINARY = os.environ.get("LEDGER_BINARY") or str(ROOT / "target" / "debug" / "ledger")
POSTGRES = os.environ.get("LEDGER_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("LEDGER_TEST_REDIS", "redis://127.0.0.1:6379")


class Daemon:
    def __init__(self, kind: str, extra: Optional[Dict[str, str]] = None) -> None:
        self.kind = kind
        self.id = "sdk" + uuid.uuid4().hex[:12]
        self.dir = tempfile.TemporaryDirectory()
        self.extra = extra or {}
        self.process: Optional[subprocess.Popen] = None
        self.output: List[str] = []
        self.http_addr = "127.0.0.1:0"
        self.start()

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.update({
            "LEDGER__SERVER__HTTP_ADDR": self.http_addr,
            "LEDGER__SERVER__GRPC_ADDR": "127.0.0.1:0",
            "LEDGER__AUTH__BCRYPT_COST": "4",
            "LEDGER__BACKEND__DATA_DIR": self.dir.name,
            "LEDGER__TELEMETRY__LOG_LEVEL": "info",
        })
        if self.kind == "shared":
            env.update({
                "LEDGER__BACKEND__KIND": "shared",
                "LEDGER__AUTH__JWT_SECRET": "sdk-test-secret-0123456789abcdef0123456789",
                "LEDGER__POSTGRES__AUTH_URL": f"{POSTGRES}/ledger_{self.id}_auth",
                "LEDGER__POSTGRES__LOGS_URL": f"{POSTGRES}/ledger_{self.id}_logs",
                "LEDGER__POSTGRES__MAX_CONNECTIONS": "4",
                "LEDGER__REDIS__URL": REDIS,
                "LEDGER__REDIS__KEY_PREFIX": f"ledger_{self.id}:",
                "LEDGER__QUEUE__LEASE_SECS": "2",
            })
        env.update(self.extra)
        return env

    def start(self) -> None:
        assert os.path.exists(BINARY), f"{BINARY} is missing: build it with `cargo build` (or set LEDGER_BINARY)"
        self.process = subprocess.Popen(
            [BINARY, "--config", str(ROOT / "config.toml"), "serve"], env=self.env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        ready = threading.Event()

        def read(stream: Any) -> None:
            for line in stream:
                self.output.append(line)
                if '"ledger ready' in line:
                    self.http_addr = json.loads(line)["http_addr"]
                    ready.set()

        threading.Thread(target=read, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ledger did not start:\n" + "".join(self.output))
        self.url = f"http://{self.http_addr}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)

    def restart(self) -> None:
        """A graceful restart on the same port: SIGTERM (ingestion answers 503 while it drains), then a new
        daemon on the same backend."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        if self.kind == "shared":
            for db in (f"ledger_{self.id}_auth", f"ledger_{self.id}_logs"):
                subprocess.run(["psql", f"{POSTGRES}/postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                               capture_output=True)
        self.dir.cleanup()

    def call(self, method: str, path: str, body: Any = None, bearer: Optional[str] = None) -> Tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def tenant(self, settings: Optional[Dict[str, Any]] = None) -> Tuple[str, str, str]:
        """A user, a project (with `settings`) and a key with both scopes: (session token, project id, key)."""
        status, body = self.call("POST", "/v1/register", {"email": f"{uuid.uuid4().hex}@example.com",
                                                          "password": "correct horse"})
        assert status == 201, body
        token = body["token"]
        status, project = self.call("POST", "/v1/projects", {"name": "sdk"}, token)
        assert status == 201, project
        if settings:
            status, patched = self.call("PATCH", f"/v1/projects/{project['id']}", {"settings": settings}, token)
            assert status == 200, patched
        status, key = self.call("POST", f"/v1/projects/{project['id']}/keys", {"scopes": ["ingest", "query"]}, token)
        assert status == 201, key
        return token, project["id"], key["key"]

    def logs(self, key: str) -> List[Dict[str, Any]]:
        """Every stored log of the key's project."""
        from ledger_sdk import Client

        client = Client(self.url, key)
        try:
            return list(client.query(start=_epoch(), end=_far(), page_size=1000))
        finally:
            client.close(0)


def _epoch():
    import datetime as dt

    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _far():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)


def eventually(check, within: float = 30.0, what: str = "a condition"):
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.05)


@pytest.fixture(params=["embedded", "shared"])
def daemon(request):
    d = Daemon(request.param)
    yield d
    d.close()


@pytest.fixture()
def embedded():
    d = Daemon("embedded")
    yield d
    d.close()
