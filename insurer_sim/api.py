"""The insurers' APIs, apart from any HTTP server: which route a request takes, what the insurer's
fault does to it, and the answer.

Both servers of the simulator carry out what `InsurerApi.handle` decides: aiohttp on the shared
port (`insurer_sim.app`, every insurer under `/insurers/{id}`), and the lean server on each
insurer's own port (`insurer_sim.lean_http`). So routing, faults and answers are one code, and
the two differ only in how bytes move.

Routes, below `/insurers/{insurer_id}`: each dialect's create (POST) and poll (GET) paths, and
`/pay/{offer_id}` (GET). A path of another dialect than the insurer's is that dialect's 404; an
unknown path is `{"error": "not found"}`, a known one with the wrong method a 405 with `Allow`.
The insurer's fault (`FaultState.decide`) applies to every routed request of an insurer this
listener serves, before the dialect sees it: a request answered in its place issues nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote

from insurer_sim.dialects import DIALECTS, Dialect, Reply
from insurer_sim.fault_state import Drop, Fail, FaultState, Garble, Hold, Proceed, Throttle
from insurer_sim.insurer import Offer, SimInsurer, Simulation

JSON = "application/json; charset=utf-8"
NOT_FOUND = {"error": "not found"}
INTERNAL_ERROR = {"error": "internal error"}
PREFIX = "/insurers/"

# The `malformed` answers, all with status 200.
BROKEN_JSON = '{"status": "QUOTED", "offer": {"offerId": "7F3A", "premium": {"amount": 123'
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><h1>502 Bad Gateway</h1><hr><p>nginx</p></body></html>\n"
)
WRONG_SCHEMA: dict[str, object] = {"result": "success", "data": {"items": [], "total": 0}}


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP response: status, body, its Content-Type, extra headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Late:
    """Answer `answer()` after `delay_s` seconds of the clock, unless the client went away by
    then (the answer is made only then: a poll made late issues late)."""

    delay_s: float
    answer: Callable[[], Answer]


@dataclass(frozen=True, slots=True)
class Held:
    """Never answer: wait on `faults.hold()` (until the fault changes), then close."""

    faults: FaultState


# What a server does with a request: answer now, answer later, close at once (Drop), or hold.
Outcome = Answer | Late | Drop | Held


def json_answer(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    """A JSON answer, encoded as aiohttp's `json_response` would."""
    return Answer(status, json.dumps(body).encode(), JSON, headers or {})


def error_answer(status: int, headers: Mapping[str, str] | None = None) -> Answer:
    """`{"error": "<reason phrase in lower case>"}` with `status`."""
    return json_answer({"error": phrase(status).lower()}, status, headers)


def reply_answer(reply: Reply) -> Answer:
    return json_answer(reply.body, reply.status, reply.headers)


@dataclass(frozen=True, slots=True)
class _Route:
    kind: str  # "create", "poll" or "pay"
    insurer_id: str
    dialect: Dialect | None  # None for "pay"
    arg: str  # the poll's id or the offer's id ("" for a create)
    methods: tuple[str, ...]
    template: str  # the route as a pattern, for span names

    @property
    def allow(self) -> str:
        return ",".join(self.methods)


_GET = ("GET", "HEAD")
_POST = ("POST",)


class InsurerApi:
    """The API of every insurer of `simulation`, or of insurer `only` alone (its own port)."""

    def __init__(self, simulation: Simulation, only: str | None = None) -> None:
        self.simulation = simulation
        self.only = only
        # (dialect, path below the insurer) of every create; poll paths by their fixed prefix.
        self._creates = {d.create_path: d for d in DIALECTS.values()}
        self._polls = {d.poll_path.removesuffix("/{ref}"): d for d in DIALECTS.values()}
        if any(not d.poll_path.endswith("/{ref}") for d in DIALECTS.values()):
            raise ValueError("a poll path must end with /{ref}")

    def route_template(self, path: str) -> str | None:
        """The route `path` (raw, no query) takes, as a pattern ("/insurers/{insurer_id}/…"),
        or None when it takes none."""
        route = self._route(path)
        return route.template if route is not None else None

    def handle(self, method: str, path: str, body: bytes, idempotency_key: str | None, origin: str) -> Outcome:
        """What to do with a request: `path` is the raw path (percent-encoded, no query);
        `origin` is "scheme://host[:port]" as the request reached this server (an offer's
        payment link starts with it)."""
        route = self._route(path)
        if route is None:
            return json_answer(NOT_FOUND, 404)
        if method not in route.methods:
            return error_answer(405, {"Allow": route.allow})
        insurer = self._served(route.insurer_id)
        if insurer is None:
            return self._answer(route, None, body, idempotency_key, origin)
        action = insurer.faults.decide()
        if isinstance(action, Proceed):
            if action.delay_s > 0:
                return Late(action.delay_s, lambda: self._answer(route, insurer, body, idempotency_key, origin))
            return self._answer(route, insurer, body, idempotency_key, origin)
        if isinstance(action, Drop):
            return action
        if isinstance(action, Hold):
            return Held(insurer.faults)
        return fault_answer(action)

    def _served(self, insurer_id: str) -> SimInsurer | None:
        if self.only is not None and self.only != insurer_id:
            return None
        return self.simulation.insurers.get(insurer_id)

    def _route(self, path: str) -> _Route | None:
        if not path.startswith(PREFIX):
            return None
        insurer_id, slash, rest = path[len(PREFIX) :].partition("/")
        if not insurer_id or not slash:
            return None
        rest = "/" + rest
        insurer_id = unquote(insurer_id)
        base = "/insurers/{insurer_id}"
        dialect = self._creates.get(rest)
        if dialect is not None:
            return _Route("create", insurer_id, dialect, "", _POST, base + dialect.create_path)
        head, _, last = rest.rpartition("/")
        if not last:
            return None
        dialect = self._polls.get(head)
        if dialect is not None:
            return _Route("poll", insurer_id, dialect, unquote(last), _GET, base + dialect.poll_path)
        if head == "/pay":
            return _Route("pay", insurer_id, None, unquote(last), _GET, base + "/pay/{offer_id}")
        return None

    def _answer(
        self, route: _Route, insurer: SimInsurer | None, body: bytes, idempotency_key: str | None, origin: str
    ) -> Answer:
        dialect = route.dialect
        if dialect is None:
            return _pay(insurer, route.arg)
        if insurer is None or insurer.profile.dialect != dialect.name:
            return reply_answer(dialect.not_found)
        base_url = f"{origin}/insurers/{insurer.insurer_id}"
        if route.kind == "create":
            return reply_answer(dialect.create(insurer, body, idempotency_key, base_url))
        return reply_answer(dialect.poll(insurer, route.arg, base_url))


def _pay(insurer: SimInsurer | None, offer_id: str) -> Answer:
    """The payment link of an issued offer (the simulator takes no money)."""
    application = insurer.issued_offer(offer_id) if insurer else None
    if insurer is None or application is None or not isinstance(application.outcome, Offer):
        return json_answer(NOT_FOUND, 404)
    return json_answer(
        {
            "insurer_id": insurer.insurer_id,
            "offer_id": application.outcome.offer_id,
            "reference": application.reference,
            "premium_kopecks": application.outcome.breakdown.premium_kopecks,
            "message": "payment is simulated: no money moves",
        }
    )


def fault_answer(action: Fail | Throttle | Garble) -> Answer:
    """The answer a fault gives in the insurer's place."""
    if isinstance(action, Throttle):
        return json_answer({"error": "too many requests"}, 429, {"Retry-After": str(action.retry_after_s)})
    if isinstance(action, Fail):
        reason = phrase(action.status, "Server Error")
        if action.text:
            return Answer(action.status, reason.encode(), "text/plain; charset=utf-8")
        return json_answer({"error": reason.lower()}, action.status)
    if action.variant == "json":
        return Answer(200, BROKEN_JSON.encode())
    if action.variant == "html":
        return Answer(200, HTML_PAGE.encode(), "text/html; charset=utf-8")
    return json_answer(WRONG_SCHEMA)


def phrase(status: int, default: str = "Error") -> str:
    """The reason phrase of `status` ("Not Found"), or `default` for a status HTTP does not name."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return default
