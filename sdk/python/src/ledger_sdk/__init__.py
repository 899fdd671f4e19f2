"""Ledger's Python SDK: a client that batches, compresses and retries in the background, a logging handler,
and a query helper. See the README for the configuration and the delivery semantics."""

from ._client import Client, LedgerError
from ._handler import LedgerHandler

__all__ = ["Client", "LedgerError", "LedgerHandler"]
__version__ = "0.1.0"
