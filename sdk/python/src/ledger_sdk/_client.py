"""The client: a bounded buffer, one background thread that sends it in batches, and the query helper."""

from __future__ import annotations

import atexit
import collections
import datetime as _dt
import gzip
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from typing import Any, Deque, Dict, Iterator, List, Mapping, Optional, Tuple, Union

_log = logging.getLogger("ledger_sdk")

#: Statuses worth retrying: rate limited, over quota for now, unavailable, and any server error.
_RETRYABLE = {408, 429, 500, 502, 503, 504}

LogInput = Union[str, Mapping[str, Any]]


class LedgerError(Exception):
    """A request the daemon refused for good (bad key, invalid query, ...)."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"{status} {error.get('code', '')}: {error.get('message', body)}")
        self.status = status
        self.body = body


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Client:
    """Sends logs to Ledger from a background thread; never blocks the caller and never raises from `send`.

    Logs wait in a bounded buffer (``max_buffer``). A batch goes out when it holds ``batch_size`` logs or
    its first log has waited ``linger`` seconds. Each batch carries its own ``Idempotency-Key``, so a retry
    after a lost answer never stores it twice. Retries (429, 503, 5xx, connection errors) back off
    exponentially with jitter, or wait what ``Retry-After`` says, for as long as the client is open; at
    ``close`` (and interpreter exit) they stop at its timeout. When the buffer is full, the newest log is
    dropped and counted in ``stats["dropped"]``: the logs already waiting are kept.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        service: Optional[str] = None,
        environment: Optional[str] = None,
        host: Optional[str] = None,
        batch_size: int = 100,
        linger: float = 0.5,
        max_buffer: int = 10_000,
        timeout: float = 10.0,
        compression: Optional[str] = "gzip",
        encoding: str = "json",
        max_retry_delay: float = 30.0,
        exit_timeout: float = 5.0,
    ) -> None:
        self.url = (url or os.environ.get("LEDGER_URL") or "http://localhost:8000").rstrip("/")
        self.api_key = api_key or os.environ.get("LEDGER_API_KEY") or ""
        if not self.api_key:
            raise ValueError("an API key is needed: pass api_key= or set LEDGER_API_KEY")
        if encoding not in ("json", "msgpack"):
            raise ValueError("encoding must be 'json' or 'msgpack'")
        if encoding == "msgpack":
            import msgpack  # noqa: F401  (fails here, not in the thread, when missing)
        if compression not in (None, "gzip"):
            raise ValueError("compression must be 'gzip' or None")
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be 1 to 1000 (the daemon's batch limit)")
        self.defaults = {k: v for k, v in (("service", service), ("environment", environment), ("host", host)) if v}
        self.batch_size = batch_size
        self.linger = linger
        self.max_buffer = max_buffer
        self.timeout = timeout
        self.compression = compression
        self.encoding = encoding
        self.max_retry_delay = max_retry_delay
        self.exit_timeout = exit_timeout
        self._stats = {"sent": 0, "dropped": 0, "failed": 0, "retries": 0, "batches": 0}
        self.last_error: Optional[str] = None
        self._setup()
        me = weakref.ref(self)

        def at_exit() -> None:
            client = me()
            if client is not None:
                client.close(client.exit_timeout)

        atexit.register(at_exit)
        if hasattr(os, "register_at_fork"):

            def in_child() -> None:
                client = me()
                if client is not None:
                    client._setup()

            os.register_at_fork(after_in_child=in_child)

    def _setup(self) -> None:
        """Fresh state: at start, and in a forked child (whose parent's logs are the parent's to send)."""
        self._cond = threading.Condition()
        self._buffer: Deque[Dict[str, Any]] = collections.deque()
        self._first_at = 0.0
        self._inflight = 0
        self._flushing = 0
        self._closing = False
        self._deadline: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()

    @property
    def stats(self) -> Dict[str, int]:
        """Counters since start: logs ``sent`` (acknowledged), ``dropped`` (buffer full), ``failed`` (refused
        for good, or still unsent at close), ``retries`` and ``batches``; and ``queued`` now."""
        with self._cond:
            return dict(self._stats, queued=len(self._buffer) + self._inflight)

    # -- sending ---------------------------------------------------------------------------------------

    def send(self, message: LogInput, **fields: Any) -> bool:
        """Queues one log: a message (with ``level=``, ``attributes=``, ... as keyword fields) or a whole log
        object as ``POST /v1/logs`` takes it. False when the buffer was full and the log was dropped."""
        log = dict(message) if isinstance(message, Mapping) else {"message": str(message)}
        log.update(fields)
        return self.send_log(log)

    def send_log(self, log: Dict[str, Any]) -> bool:
        for key, value in self.defaults.items():
            log.setdefault(key, value)
        with self._cond:
            if self._closing:
                self._stats["dropped"] += 1
                return False
            if len(self._buffer) >= self.max_buffer:
                self._stats["dropped"] += 1
                return False
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.append(log)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ledger-sdk", daemon=True)
                self._thread.start()
            if len(self._buffer) >= self.batch_size:
                self._cond.notify_all()
        return True

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        """Waits until every queued log is acknowledged or refused; False if some are left after ``timeout``."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._buffer or self._inflight:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: Optional[float] = 5.0) -> bool:
        """Sends what is queued (retrying until ``timeout``), then stops the thread. Later ``send``s drop.
        True when every queued log was acknowledged."""
        with self._cond:
            if self._closing and self._thread is None:
                return not self._buffer
            self._deadline = None if timeout is None else time.monotonic() + timeout
            failed_before = self._stats["failed"]
        done = self.flush(timeout)
        with self._cond:
            self._closing = True
            thread, self._thread = self._thread, None
            if not done:
                self._stats["failed"] += len(self._buffer)
                self._buffer.clear()
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        with self._cond:
            return done and self._stats["failed"] == failed_before

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._buffer and not self._closing:
                    self._cond.wait()
                if not self._buffer:
                    return
                # Linger for a full batch, unless someone is flushing.
                while len(self._buffer) < self.batch_size and not self._closing and not self._flushing:
                    left = self._first_at + self.linger - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                self._first_at = time.monotonic()
                self._inflight = len(batch)
            try:
                self._deliver(batch)
            except Exception as e:  # never let the thread die: count and go on
                self._count("failed", len(batch))
                self.last_error = repr(e)
            with self._cond:
                self._inflight = 0
                self._cond.notify_all()

    def _count(self, what: str, n: int = 1) -> None:
        with self._cond:
            self._stats[what] += n

    def _giving_up(self) -> bool:
        with self._cond:
            return self._deadline is not None and time.monotonic() >= self._deadline

    def _encode(self, logs: List[Dict[str, Any]]) -> Tuple[bytes, Dict[str, str]]:
        headers = {"X-API-Key": self.api_key, "User-Agent": "ledger-sdk-python/0.1"}
        if self.encoding == "msgpack":
            import msgpack

            body = msgpack.packb({"logs": logs}, default=str)
            headers["Content-Type"] = "application/msgpack"
        else:
            body = json.dumps({"logs": logs}, default=str, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def _deliver(self, logs: List[Dict[str, Any]]) -> None:
        """Sends one batch until it is acknowledged, refused for good, or the client gives up at close."""
        self._count("batches")
        body, headers = self._encode(logs)
        headers["Idempotency-Key"] = uuid.uuid4().hex
        attempt = 0
        while True:
            status, answer_headers, answer = self._post("/v1/logs", body, headers)
            if status == 202:
                self._count("sent", len(logs))
                return
            if status == 413 and len(logs) > 1:
                half = len(logs) // 2
                self._deliver(logs[:half])
                self._deliver(logs[half:])
                return
            if status == 422 and isinstance(answer, dict):
                bad = {d.get("index") for d in answer.get("error", {}).get("details", []) if "index" in d}
                if bad and len(bad) < len(logs):
                    # The batch is judged whole: send the good logs again without the bad ones.
                    self._count("failed", len(bad))
                    self.last_error = json.dumps(answer)[:500]
                    self._deliver([log for i, log in enumerate(logs) if i not in bad])
                    return
            if status is not None and status not in _RETRYABLE:
                self._count("failed", len(logs))
                self.last_error = f"{status}: {json.dumps(answer)[:500] if answer is not None else ''}"
                _log.debug("ledger refused a batch: %s", self.last_error)
                return
            if self._giving_up():
                self._count("failed", len(logs))
                return
            delay = _retry_after(answer_headers)
            if delay is None:
                # Exponential backoff with full jitter.
                delay = random.uniform(0, min(self.max_retry_delay, 0.2 * (2**attempt)))
            delay = min(delay, self.max_retry_delay)
            with self._cond:
                if self._deadline is not None:
                    delay = min(delay, max(0.0, self._deadline - time.monotonic()))
            self._count("retries")
            attempt += 1
            time.sleep(delay)

    def _post(self, path: str, body: bytes, headers: Dict[str, str]) -> Tuple[Optional[int], Dict[str, str], Any]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers), _json(response.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers or {}), _json(e.read())
        except (OSError, ValueError) as e:  # refused, reset, timed out: worth a retry
            self.last_error = repr(e)
            return None, {}, None

    # -- querying --------------------------------------------------------------------------------------

    def query(
        self,
        q: Optional[str] = None,
        *,
        since: Union[float, _dt.timedelta, None] = None,
        start: Optional[_dt.datetime] = None,
        end: Optional[_dt.datetime] = None,
        level: Union[str, List[str], None] = None,
        min_level: Optional[str] = None,
        service: Union[str, List[str], None] = None,
        environment: Optional[str] = None,
        fingerprint: Optional[str] = None,
        trace_id: Optional[str] = None,
        page_size: int = 100,
    ) -> Iterator[Dict[str, Any]]:
        """Every log matching the filters of ``GET /v1/logs``, newest first, paging with the cursor (the key
        needs the ``query`` scope). ``since`` is seconds or a timedelta before now."""
        now = _dt.datetime.now(_dt.timezone.utc)
        if since is not None:
            start = now - (since if isinstance(since, _dt.timedelta) else _dt.timedelta(seconds=since))
        params: List[Tuple[str, str]] = [("limit", str(page_size))]
        for name, value in (("q", q), ("min_level", min_level), ("environment", environment),
                            ("fingerprint", fingerprint), ("trace_id", trace_id)):
            if value is not None:
                params.append((name, value))
        for name, many in (("level", level), ("service", service)):
            for value in [many] if isinstance(many, str) else (many or []):
                params.append((name, value))
        for name, when in (("from", start), ("to", end)):
            if when is not None:
                params.append((name, when.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")))
        cursor: Optional[str] = None
        while True:
            query = urllib.parse.urlencode(params + ([("cursor", cursor)] if cursor else []))
            request = urllib.request.Request(f"{self.url}/v1/logs?{query}", headers={"X-API-Key": self.api_key})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    page = _json(response.read())
            except urllib.error.HTTPError as e:
                raise LedgerError(e.code, _json(e.read())) from None
            yield from page["logs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
