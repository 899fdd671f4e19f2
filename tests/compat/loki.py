"""python-logging-loki (JSON push; it raises unless Loki answers 204) sending to Ledger's Loki front.
Usage: python loki.py URL KEY MARKER."""

import logging
import sys

import logging_loki

url, key, marker = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []


class Checked(logging_loki.LokiHandler):
    def handleError(self, record):  # noqa: N802 (logging's name)
        failures.append(sys.exc_info()[1])


handler = Checked(url=f"{url}/loki/api/v1/push", tags={"application": "loki-py", "env": "test"},
                  auth=("ledger", key), version="1")
log = logging.getLogger("loki-compat")
log.setLevel(logging.DEBUG)
log.addHandler(handler)
log.error("%s from python-logging-loki", marker, extra={"tags": {"service_name": "loki-py-svc"}})
log.info("%s second line", marker)
if failures:
    print(f"push failed: {failures}", file=sys.stderr)
    sys.exit(1)
