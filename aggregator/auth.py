"""Who may call the aggregator: a service presenting a client certificate our CA issued (mTLS:
Envoy, web_bridge, core-app) or a bearer JWT that `TokenVerifier` accepts (core-app, on the
JWT port where no client certificate is asked for). In the dev mode (no TLS) everyone is "dev".

Also where the customer a call acts for is named: the `x-osago-customer` a service asserts,
qualified by that service (anonymous browsers: "").
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from osago_common.grpc_guard import Caller, Refused, bearer_token, peer_identity
from osago_common.service_tokens import TokenRejected, TokenVerifier

log = logging.getLogger(__name__)

NEED_CREDENTIALS = "credentials required: a client certificate our CA issued, or a bearer token"


class AggregatorAuth:
    """The aggregator's `Authenticate` (osago_common.grpc_guard)."""

    def __init__(self, verifier: TokenVerifier | None, *, dev: bool, allowed_peers: tuple[str, ...] = ()) -> None:
        self._verifier = verifier
        self._dev = dev
        self._allowed = frozenset(allowed_peers)

    def __call__(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        identity = peer_identity(context)
        if identity:
            if self._allowed and identity not in self._allowed:
                raise Refused(grpc.StatusCode.PERMISSION_DENIED, "this client certificate may not call this service")
            return identity
        token = bearer_token(context.invocation_metadata())
        if token and self._verifier is not None:
            try:
                return self._verifier.verify(token)
            except TokenRejected as rejected:
                log.info("bearer token refused: %s", rejected)
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid") from None
        if self._dev:
            return "dev"
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, NEED_CREDENTIALS)


def customer_of(caller: Caller) -> str:
    """The customer a call acts for, as stored and as access tokens bind it: the service's own
    customer id qualified by the service, or "" for an anonymous browser."""
    return f"{caller.principal}:{caller.customer}" if caller.customer else ""
