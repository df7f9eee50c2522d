"""The timestamp helper against protobuf's own conversion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from osago_common.clock import set_timestamp

# Moments whose UTC form stays within Timestamp's range (years 1..9999).
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds, then the zones
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-9, minutes=-30))]),
)


@given(MOMENTS)
def test_set_timestamp_sets_what_from_datetime_sets(moment: datetime) -> None:
    ours, theirs = Timestamp(), Timestamp()
    set_timestamp(ours, moment)
    theirs.FromDatetime(moment)
    assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos)
    assert ours.ToDatetime(tzinfo=UTC) == moment


def test_set_timestamp_of_known_moments() -> None:
    stamp = Timestamp()
    set_timestamp(stamp, datetime(1970, 1, 1, 0, 0, 1, 250_000, tzinfo=UTC))
    assert (stamp.seconds, stamp.nanos) == (1, 250_000_000)
    # Before the epoch: whole seconds round down, the fraction stays positive (protobuf's form).
    set_timestamp(stamp, datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC))
    assert (stamp.seconds, stamp.nanos) == (-1, 500_000_000)
    # 2026-01-15 09:00 Moscow (UTC+3) is 06:00 UTC: 20468 days after the epoch, and six hours.
    set_timestamp(stamp, datetime(2026, 1, 15, 9, 0, tzinfo=timezone(timedelta(hours=3))))
    assert (stamp.seconds, stamp.nanos) == (20_468 * 86_400 + 6 * 3600, 0)
