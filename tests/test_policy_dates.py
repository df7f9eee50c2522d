"""Policy dates are Moscow's: late in the UTC evening, Moscow is already on the next day, and
every service that fills in or judges a start date must use Moscow's, not UTC's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from osago.v1 import application_pb2, gateway_service_pb2, quote_pb2

from aggregator.bus import MemoryEventBus
from aggregator.cache import MemoryResultCache
from aggregator.core import Aggregator, InvalidRequest
from aggregator.settings import AggregatorSettings, GatewayEndpoint
from aggregator.store import MemoryRequestStore
from insurer_gateway.dialects import DIALECTS
from insurer_gateway.exchange import HttpCall, HttpResponse
from insurer_gateway.offers import OfferFlow
from insurer_gateway.settings import GatewaySettings
from osago_common.clock import FakeClock
from osago_common.dates import default_policy_start, moscow_today
from tests.conftest import load_example

# 22:30 UTC on 15 January is 01:30 on 16 January in Moscow (UTC+3): today there is the 16th,
# so an empty start date means the 17th, and the 15th is already in the past.
LATE_UTC_EVENING = datetime(2026, 1, 15, 22, 30, tzinfo=UTC)
MOSCOW_TODAY = date(2026, 1, 16)
MOSCOW_TOMORROW = "2026-01-17"


def test_moscow_today_and_the_default_start_follow_moscow_past_21_utc() -> None:
    clock = FakeClock(start=LATE_UTC_EVENING)
    assert moscow_today(clock) == MOSCOW_TODAY
    assert default_policy_start(moscow_today(clock)).isoformat() == MOSCOW_TOMORROW
    assert moscow_today(FakeClock(start=datetime(2026, 1, 15, 20, 59, tzinfo=UTC))) == date(2026, 1, 15)


class RecordingGateways:
    """Keeps the application each insurer is sent, and answers "declined"."""

    def __init__(self) -> None:
        self.sent: list[application_pb2.Application] = []
        self.asked = asyncio.Event()

    async def request_offer(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, timeout_s: float
    ) -> AsyncIterator[gateway_service_pb2.RequestOfferResponse]:
        self.sent.append(application)
        self.asked.set()
        yield gateway_service_pb2.RequestOfferResponse(
            failed=gateway_service_pb2.OfferFailed(reason=quote_pb2.FAILURE_REASON_DECLINED, message="no")
        )


def aggregator(gateways: RecordingGateways) -> Aggregator:
    settings = AggregatorSettings(gateways=(GatewayEndpoint("alfa", "Alfa", "127.0.0.1:1"),))
    clock = FakeClock(start=LATE_UTC_EVENING)
    return Aggregator(settings, gateways, MemoryRequestStore(), MemoryEventBus(clock), MemoryResultCache(clock), clock)


async def test_the_aggregator_sends_insurers_tomorrow_in_moscow_for_an_empty_start_date() -> None:
    gateways = RecordingGateways()
    service = aggregator(gateways)
    application = load_example()
    assert not application.policy_start_date
    await service.create(application, "", None)
    await asyncio.wait_for(gateways.asked.wait(), 5)
    await service.close()
    assert [a.policy_start_date for a in gateways.sent] == [MOSCOW_TOMORROW]


async def test_the_aggregator_judges_a_start_date_by_moscows_today() -> None:
    gateways = RecordingGateways()
    service = aggregator(gateways)
    utc_today = load_example()
    utc_today.policy_start_date = "2026-01-15"  # still today in UTC, yesterday in Moscow
    with pytest.raises(InvalidRequest, match="policy_start_date: must not be in the past"):
        await service.create(utc_today, "", None)
    moscow = load_example()
    moscow.policy_start_date = MOSCOW_TODAY.isoformat()
    await service.create(moscow, "", None)
    await service.close()


def test_the_gateway_fills_an_empty_start_date_with_tomorrow_in_moscow() -> None:
    async def never(call: HttpCall, timeout: float) -> HttpResponse:
        raise AssertionError("no call expected")

    settings = GatewaySettings(insurer_id="alfa", insurer_name="Alfa", dialect="rest", base_url="http://insurer")
    flow = OfferFlow(settings, DIALECTS["rest"], never, FakeClock(start=LATE_UTC_EVENING))
    call = flow.prepare("req-1", load_example())
    assert call.json is not None and call.json["startDate"] == MOSCOW_TOMORROW
