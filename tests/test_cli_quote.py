"""`osago quote`: the pure view (rows, price order, countdown, failure reasons) and run_quote
against a real grpc.aio server playing a scripted session."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from osago.v1 import (
    aggregator_service_pb2,
    aggregator_service_pb2_grpc,
    application_pb2,
    events_pb2,
    quote_pb2,
)

from aggregator.servicer import GetQuotesContext
from osago_cli.quote import (
    ApplicationFileError,
    QuoteView,
    event_line,
    format_countdown,
    format_rub,
    load_application,
    render,
    run_quote,
    summary,
)

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(seconds=60)
INSURERS = (
    ("alfa", "AlfaStrakhovanie"),
    ("ingos", "Ingosstrakh"),
    ("vsk", "VSK"),
    ("reso", "RESO"),
)

APPLICATION_JSON = {
    "vehicle": {"vin": "XTA21700080000001", "powerHp": 106, "category": "VEHICLE_CATEGORY_B"},
    "owner": {"name": {"lastName": "Ivanov", "firstName": "Ivan"}, "registrationCity": "Moscow"},
    "drivers": [{"licenceNumber": "7701123456", "kbmClass": "KBM_CLASS_3"}],
}


def started() -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent(
        session_started=events_pb2.SessionStarted(
            insurers=[quote_pb2.InsurerRef(insurer_id=i, insurer_name=n) for i, n in INSURERS]
        )
    )
    event.session_started.deadline.FromDatetime(DEADLINE)
    return event


def offer(insurer_id: str, kopecks: int) -> events_pb2.QuoteEvent:
    name = dict(INSURERS)[insurer_id]
    quote = quote_pb2.Quote(insurer_id=insurer_id, insurer_name=name, premium_kopecks=kopecks)
    return events_pb2.QuoteEvent(quote_received=events_pb2.QuoteReceived(quote=quote))


def progress(insurer_id: str, state: events_pb2.InsurerProgressState.ValueType) -> events_pb2.QuoteEvent:
    return events_pb2.QuoteEvent(insurer_progress=events_pb2.InsurerProgress(insurer_id=insurer_id, state=state))


def failed(insurer_id: str, reason: quote_pb2.FailureReason.ValueType, message: str = "") -> events_pb2.QuoteEvent:
    return events_pb2.QuoteEvent(
        insurer_failed=events_pb2.InsurerFailed(insurer_id=insurer_id, reason=reason, message=message)
    )


def finished() -> events_pb2.QuoteEvent:
    return events_pb2.QuoteEvent(
        session_finished=events_pb2.SessionFinished(
            status=events_pb2.SESSION_STATUS_COMPLETED,
            insurers_asked=4,
            quotes_received=2,
            insurers_failed=2,
            message="Every insurer answered.",
        )
    )


def session() -> list[events_pb2.QuoteEvent]:
    events = [
        started(),
        progress("alfa", events_pb2.INSURER_PROGRESS_STATE_ACCEPTED),
        offer("alfa", 1_234_567),
        offer("vsk", 1_100_000),
        failed("ingos", quote_pb2.FAILURE_REASON_DECLINED, "declined by underwriting"),
        failed("reso", quote_pb2.FAILURE_REASON_TIMEOUT),
        finished(),
    ]
    for seq, event in enumerate(events, 1):
        event.request_id, event.seq = "req-7", seq
    return events


def view_of(*events: events_pb2.QuoteEvent) -> QuoteView:
    view = QuoteView()
    for event in events:
        view.apply(event)
    return view


# The pure view.


def test_roubles_are_grouped_by_three_with_comma_before_kopecks() -> None:
    assert format_rub(1_234_567) == "12 345,67 ₽"
    assert format_rub(100_000_000) == "1 000 000,00 ₽"
    assert format_rub(5) == "0,05 ₽"


def test_countdown_rounds_up_to_whole_seconds_and_stops_at_zero() -> None:
    assert format_countdown(DEADLINE, NOW) == "1:00"
    assert format_countdown(DEADLINE, DEADLINE - timedelta(seconds=41.2)) == "0:42"
    assert format_countdown(DEADLINE, DEADLINE + timedelta(seconds=3)) == "0:00"
    assert format_countdown(None, NOW) == "–:––"


def test_started_session_shows_every_insurer_pending_and_the_time_left() -> None:
    lines = render(view_of(started()), NOW + timedelta(seconds=18))

    assert lines == [
        "OSAGO quotes · 0:42 left",
        "     AlfaStrakhovanie  pending",
        "     Ingosstrakh       pending",
        "     VSK               pending",
        "     RESO              pending",
        "0 offers · 4 waiting · 0 without an offer",
    ]


def test_offers_are_ranked_by_price_as_they_come() -> None:
    view = view_of(started(), offer("alfa", 1_234_567))
    assert render(view, NOW)[1] == "  1. AlfaStrakhovanie  12 345,67 ₽"

    view.apply(offer("vsk", 1_100_000))
    lines = render(view, NOW)

    assert lines[1:3] == [
        "  1. VSK               11 000,00 ₽",
        "  2. AlfaStrakhovanie  12 345,67 ₽",
    ]


def test_accepted_insurer_stays_accepted_through_later_pending_polls() -> None:
    view = view_of(started(), progress("ingos", events_pb2.INSURER_PROGRESS_STATE_ACCEPTED))

    changed = view.apply(progress("ingos", events_pb2.INSURER_PROGRESS_STATE_PENDING))

    assert not changed
    assert "     Ingosstrakh       accepted, computing…" in render(view, NOW)


def test_failed_insurers_show_their_reason_below_the_offers() -> None:
    view = view_of(
        started(),
        failed("ingos", quote_pb2.FAILURE_REASON_DECLINED, "declined by underwriting"),
        offer("vsk", 1_100_000),
        failed("reso", quote_pb2.FAILURE_REASON_CIRCUIT_OPEN),
        failed("alfa", quote_pb2.FAILURE_REASON_UNSPECIFIED),
    )

    assert render(view, NOW)[1:] == [
        "  1. VSK               11 000,00 ₽",
        "     AlfaStrakhovanie  failed: no offer",
        "     Ingosstrakh       failed: declined — declined by underwriting",
        "     RESO              failed: suspended after repeated failures",
        "1 offers · 0 waiting · 3 without an offer",
    ]


def test_finished_session_shows_its_status_and_a_summary_with_the_best_offer() -> None:
    view = view_of(*session())

    assert render(view, NOW)[0] == "OSAGO quotes · finished: completed"
    assert summary(view) == [
        "Finished: completed. Every insurer answered.",
        "2 offers from 4 insurers asked, 2 without an offer. Best: VSK, 11 000,00 ₽.",
    ]


def test_plain_lines_describe_each_change() -> None:
    view = QuoteView()
    lines = []
    for event in session()[:-1]:
        if view.apply(event):
            lines.append(event_line(view, event, NOW))

    assert lines == [
        "[1:00] asking 4 insurers: AlfaStrakhovanie, Ingosstrakh, VSK, RESO",
        "[1:00] accepted  AlfaStrakhovanie",
        "[1:00] offer     AlfaStrakhovanie: 12 345,67 ₽ (best so far)",
        "[1:00] offer     VSK: 11 000,00 ₽ (best so far)",
        "[1:00] failed    Ingosstrakh: declined — declined by underwriting",
        "[1:00] failed    RESO: timed out",
    ]


def test_insurer_missing_from_session_started_gets_a_row_of_its_own() -> None:
    view = view_of(
        started(),
        events_pb2.QuoteEvent(
            quote_received=events_pb2.QuoteReceived(
                quote=quote_pb2.Quote(insurer_id="maks", insurer_name="MAKS", premium_kopecks=900_000)
            )
        ),
    )

    assert render(view, NOW)[1] == "  1. MAKS              9 000,00 ₽"


# Reading the application file.


def write(tmp_path: Path, content: str) -> str:
    path = tmp_path / "application.json"
    path.write_text(content, encoding="utf-8")
    return str(path)


def test_application_is_read_from_protobuf_json(tmp_path: Path) -> None:
    application = load_application(write(tmp_path, json.dumps(APPLICATION_JSON)))

    assert application.vehicle.power_hp == 106
    assert application.drivers[0].kbm_class == application_pb2.KBM_CLASS_3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"vehicle": ', "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (
            '{"drivers": [{"licenceNumber": 7701123456}]}',
            "bad value for field drivers.licenceNumber",
        ),
        ('{"owner": {"name": {"lastName": ["Ivanov"]}}}', "bad value for field owner.name.lastName"),
        ('{"usageMonths": "Ivanov"}', "bad value for field usageMonths"),
        ('{"surname": "Ivanov"}', "unknown field 'surname' in Application"),
    ],
)
def test_unusable_application_file_is_explained_without_its_values(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(ApplicationFileError) as caught:
        load_application(write(tmp_path, content))

    assert expected in str(caught.value)
    assert "Ivanov" not in str(caught.value) and "7701123456" not in str(caught.value)


# run_quote against a scripted aggregator.


class PlayedAggregator(aggregator_service_pb2_grpc.AggregatorServiceServicer):
    """GetQuotes plays `log`, or rejects every call with `reject`."""

    def __init__(self) -> None:
        self.log = session()
        self.reject: grpc.Status | None = None
        self.requests: list[aggregator_service_pb2.GetQuotesRequest] = []

    async def GetQuotes(
        self, request: aggregator_service_pb2.GetQuotesRequest, context: GetQuotesContext
    ) -> AsyncIterator[aggregator_service_pb2.GetQuotesResponse]:
        self.requests.append(request)
        if self.reject is not None:
            await context.abort_with_status(self.reject)
        for event in self.log:
            yield aggregator_service_pb2.GetQuotesResponse(event=event)


@pytest.fixture
async def aggregator() -> AsyncIterator[tuple[PlayedAggregator, str]]:
    servicer = PlayedAggregator()
    server = grpc.aio.server()
    aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.mark.functional
async def test_json_mode_prints_one_protobuf_json_object_per_event(
    aggregator: tuple[PlayedAggregator, str], tmp_path: Path
) -> None:
    servicer, target = aggregator
    out = io.StringIO()

    code = await run_quote(write(tmp_path, json.dumps(APPLICATION_JSON)), target, True, out, 30.0)

    lines = out.getvalue().splitlines()
    assert code == 0
    assert [json.loads(line)["seq"] for line in lines] == ["1", "2", "3", "4", "5", "6", "7"]
    events = [json_format.Parse(line, events_pb2.QuoteEvent()) for line in lines]
    assert events == servicer.log
    assert json.loads(lines[-1])["sessionFinished"]["status"] == "SESSION_STATUS_COMPLETED"
    (request,) = servicer.requests
    assert request.application == json_format.ParseDict(APPLICATION_JSON, application_pb2.Application())
    assert request.time_limit.seconds == 30


@pytest.mark.functional
async def test_plain_mode_appends_lines_and_ends_with_the_summary(
    aggregator: tuple[PlayedAggregator, str], tmp_path: Path
) -> None:
    _, target = aggregator
    out = io.StringIO()

    code = await run_quote(write(tmp_path, json.dumps(APPLICATION_JSON)), target, False, out)

    text = out.getvalue()
    assert code == 0
    assert "\x1b[" not in text
    assert "offer     VSK: 11 000,00 ₽ (best so far)" in text
    assert text.endswith(
        "Finished: completed. Every insurer answered.\n"
        "2 offers from 4 insurers asked, 2 without an offer. Best: VSK, 11 000,00 ₽.\n"
    )


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.functional
async def test_terminal_mode_redraws_the_table_in_place(
    aggregator: tuple[PlayedAggregator, str], tmp_path: Path
) -> None:
    _, target = aggregator
    out = FakeTerminal()

    code = await run_quote(write(tmp_path, json.dumps(APPLICATION_JSON)), target, False, out)

    text = out.getvalue()
    assert code == 0
    assert "\x1b[6F\x1b[J" in text  # moved back over the 6-line table and cleared it
    assert "OSAGO quotes · finished: completed" in text
    assert text.endswith("Best: VSK, 11 000,00 ₽.\n")


@pytest.mark.functional
async def test_rejected_application_prints_field_violations_and_exits_1(
    aggregator: tuple[PlayedAggregator, str], tmp_path: Path
) -> None:
    servicer, target = aggregator
    detail = any_pb2.Any()
    violation = error_details_pb2.BadRequest.FieldViolation
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                violation(field="vehicle.vin", description="must be 17 characters"),
                violation(field="drivers[0].birth_date", description="required"),
            ]
        )
    )
    servicer.reject = rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="the application is invalid", details=[detail])
    )
    out, err = io.StringIO(), io.StringIO()

    file = write(tmp_path, json.dumps(APPLICATION_JSON))

    code = await run_quote(file, target, True, out, err=err)

    assert code == 1
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "error: INVALID_ARGUMENT: the application is invalid\n"
        "  vehicle.vin: must be 17 characters\n"
        "  drivers[0].birth_date: required\n"
    )


async def test_unreadable_file_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = await run_quote(str(tmp_path / "missing.json"), "127.0.0.1:1", False, io.StringIO())

    assert code == 2
    missing = tmp_path / "missing.json"
    assert capsys.readouterr().err == f"error: cannot read {missing}: No such file or directory\n"
