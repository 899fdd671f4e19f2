"""The Elasticsearch Python client (it refuses a server whose answers lack X-Elastic-Product) and its bulk
helper, sending to Ledger's Elasticsearch front. Usage: python elastic.py URL KEY MARKER apikey|basic."""

import sys

from elasticsearch import Elasticsearch, helpers

url, key, marker, auth = sys.argv[1:5]
if auth == "apikey":
    es = Elasticsearch(url, api_key=key)
else:
    es = Elasticsearch(url, basic_auth=("elastic", key))

info = es.info()
assert info["version"]["number"].startswith("8."), info

docs = [
    {"_index": "app-logs", "_source": {"@timestamp": "2026-11-30T10:00:00.250Z", "message": f"{marker} es one",
                                       "log": {"level": "error"}, "service": {"name": "es-py"},
                                       "host": {"name": "es-host"}, "user": {"id": 7}}},
    {"_index": "app-logs", "_op_type": "create",
     "_source": {"@timestamp": "2026-11-30T10:00:01Z", "msg": f"{marker} es two", "level": "warn"}},
]
ok, errors = helpers.bulk(es, docs, raise_on_error=False)
if ok != 2 or errors:
    print(f"bulk: {ok} stored, errors {errors}", file=sys.stderr)
    sys.exit(1)

# One document Ledger refuses (a message over 32 KiB) beside a good one: a per-item error, the other stored.
ok, errors = helpers.bulk(es, [
    {"_index": "app-logs", "_source": {"message": f"{marker} es too long " + "x" * 40000}},
    {"_index": "app-logs", "_source": {"message": f"{marker} es three"}},
], raise_on_error=False)
print(f"mixed: {ok} {errors}")
