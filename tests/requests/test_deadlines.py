"""Deadlines count calendar months on the moment's own calendar, cached or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from app.requests.deadlines import Period, add_months


def test_equal_instants_in_other_zones_keep_their_own_month_ends() -> None:
    in_utc = datetime(2026, 1, 30, 23, 30, tzinfo=UTC)
    in_paris = in_utc.astimezone(timezone(timedelta(hours=1)))  # 31 Jan 00:30, the same instant
    month = Period(months=1)
    # Asked in both orders: each answer is its own zone's, not whichever was asked first.
    assert month.after(in_paris) == add_months(in_paris, 1) == datetime(2026, 2, 27, 23, 30, tzinfo=UTC)
    assert month.after(in_utc) == add_months(in_utc, 1) == datetime(2026, 2, 28, 23, 30, tzinfo=UTC)
    assert month.after(in_paris) != month.after(in_utc)
    assert Period(days=45).after(in_utc) == in_utc + timedelta(days=45)
