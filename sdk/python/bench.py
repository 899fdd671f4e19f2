"""How much the SDK costs the application: logging calls one thread can make through LedgerHandler, the time
each call adds against a handler that does nothing, and what reaches the daemon. Starts the embedded daemon
(the binary at LEDGER_BINARY, default target/release/ledger, else target/debug/ledger).

    python bench.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))
sys.path.insert(0, str(HERE / "tests"))
release = HERE.parents[1] / "target" / "release" / "ledger"
if "LEDGER_BINARY" not in os.environ and release.exists():
    os.environ["LEDGER_BINARY"] = str(release)

from conftest import Daemon  # noqa: E402
from ledger_sdk import LedgerHandler  # noqa: E402


class Nothing(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass


def calls(handler: logging.Handler, n: int) -> tuple[float, list[int]]:
    log = logging.getLogger(f"bench.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    samples = []
    started = time.perf_counter()
    for i in range(n):
        if i % 100 == 0:
            t = time.perf_counter_ns()
            log.info("order %d placed by user %d", i, i * 7, extra={"order_id": i, "amount": 49.95})
            samples.append(time.perf_counter_ns() - t)
        else:
            log.info("order %d placed by user %d", i, i * 7, extra={"order_id": i, "amount": 49.95})
    elapsed = time.perf_counter() - started
    log.removeHandler(handler)
    return elapsed, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    daemon = Daemon("embedded")
    try:
        _, _, key = daemon.tenant({"rate_limit_per_minute": 1_000_000, "rate_limit_per_hour": 10_000_000})
        base, base_samples = calls(Nothing(), args.calls)
        handler = LedgerHandler(url=daemon.url, api_key=key, batch_size=1000, max_buffer=args.calls, service="bench")
        spent, samples = calls(handler, args.calls)
        started = time.perf_counter()
        assert handler.client.flush(300), handler.client.stats
        drained = time.perf_counter() - started
        stats = handler.client.stats
        print(f"logging calls through LedgerHandler: {args.calls / spent:,.0f}/s on one thread "
              f"(a no-op handler: {args.calls / base:,.0f}/s)")
        added = (spent - base) / args.calls * 1e6
        print(f"added per call: {added:.1f} µs mean; p50 {statistics.median(samples) / 1000:.1f} µs, "
              f"p99 {sorted(samples)[int(len(samples) * 0.99)] / 1000:.1f} µs "
              f"(no-op handler p50 {statistics.median(base_samples) / 1000:.1f} µs)")
        print(f"overhead against the no-op handler: {spent / base:.2f}×")
        print(f"delivered {stats['sent']:,} logs in {stats['batches']} batches, dropped {stats['dropped']}, "
              f"failed {stats['failed']}; the flush after the last call took {drained:.2f} s")
        handler.client.close()
    finally:
        daemon.close()


if __name__ == "__main__":
    main()
