"""A `logging.Handler` that sends records through a `Client`."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any, Dict, Optional

from ._client import Client

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

_trace: Any = None


def _current_ids() -> Optional[tuple]:
    """The current OpenTelemetry trace and span ids, when opentelemetry-api is installed and a span is on."""
    global _trace
    if _trace is None:
        try:
            from opentelemetry import trace

            _trace = trace
        except ImportError:
            _trace = False
    if not _trace:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _level(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "CRITICAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def _attribute(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


class LedgerHandler(logging.Handler):
    """Maps each record to a log (level, message, time, logger name, ``extra`` → attributes, ``exc_info`` →
    exception with type, value and stacktrace, the current OpenTelemetry trace/span ids) and queues it on
    the client. It never raises into the logging call: a record it cannot map is counted in
    ``client.stats["handler_errors"]``."""

    def __init__(self, client: Optional[Client] = None, level: int = logging.NOTSET, **client_options: Any) -> None:
        super().__init__(level)
        self.client = client if client is not None else Client(**client_options)
        self.client._stats.setdefault("handler_errors", 0)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name == "ledger_sdk" or record.name.startswith("ledger_sdk."):
                return  # the SDK's own records would loop
            self.client.send_log(self.to_log(record))
        except Exception:
            try:
                self.client._count("handler_errors")
            except Exception:
                pass

    def to_log(self, record: logging.LogRecord) -> Dict[str, Any]:
        message = record.getMessage() or "(empty message)"
        attributes: Dict[str, Any] = {"logger": record.name}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                attributes[key] = _attribute(value)
        log: Dict[str, Any] = {
            "message": message,
            "level": _level(record.levelno),
            "timestamp": record.created,
            "attributes": attributes,
        }
        if record.exc_info and record.exc_info[0] is not None:
            kind, value, tb = record.exc_info
            log["exception"] = {
                "type": kind.__name__,
                "value": str(value),
                "stacktrace": "".join(traceback.format_exception(kind, value, tb)),
            }
        ids = _current_ids()
        if ids:
            log["trace_id"], log["span_id"] = ids
        return log

    def flush(self) -> None:
        self.client.flush(5.0)

    def close(self) -> None:
        try:
            self.client.flush(self.client.exit_timeout)
        finally:
            super().close()
