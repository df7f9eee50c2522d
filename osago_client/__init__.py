"""Typed asyncio client of the quote aggregator (osago.v1.AggregatorService), used by core-app and
the `osago` CLI: one channel with retries and keepalive, deadlines on every call, event streams
that resume after a dropped connection, and one error type."""

from osago_client.client import QuoteClient
from osago_client.errors import QuoteError

__all__ = ["QuoteClient", "QuoteError"]
