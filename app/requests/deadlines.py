"""Legal deadlines: when a deletion request is due, and how far the law lets it be extended.

Pure date arithmetic; the service supplies the settings-driven defaults.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache

from app.requests.models import LegalBasis


@dataclass(frozen=True)
class Period:
    months: int = 0
    days: int = 0

    def after(self, moment: datetime) -> datetime:
        return _after(self.months, self.days, moment, moment.tzinfo)


@lru_cache(maxsize=256)
def _after(months: int, days: int, moment: datetime, zone: tzinfo | None) -> datetime:
    # Cached: a batch's requests share their moment of receipt, so a thousand deadlines are one.
    # ``zone`` is part of the key because equal instants compare equal across zones, and months
    # are counted on the moment's own calendar.
    return add_months(moment, months) + timedelta(days=days)


# Statutory response periods; the other bases take their days from settings.
STATUTORY_PERIODS: dict[LegalBasis, Period] = {
    LegalBasis.GDPR_ART17: Period(months=1),  # Art. 12(3): one month of receipt
    LegalBasis.CCPA_1798_105: Period(days=45),  # § 1798.130(a)(2)
    LegalBasis.CPRA: Period(days=45),
}

# The longest further period each law allows, granted once.
EXTENSION_LIMITS: dict[LegalBasis, Period] = {
    LegalBasis.GDPR_ART17: Period(months=2),  # Art. 12(3): "by two further months"
    LegalBasis.CCPA_1798_105: Period(days=45),  # "an additional 45 days when reasonably necessary"
    LegalBasis.CPRA: Period(days=45),
    LegalBasis.PIPEDA: Period(days=30),  # s. 8(4)(a)
}


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def response_period(basis: LegalBasis, configured_days: dict[str, int]) -> Period:
    if basis in STATUTORY_PERIODS:
        return STATUTORY_PERIODS[basis]
    return Period(days=configured_days.get(basis.value, 30))


def due_at(basis: LegalBasis, requested_at: datetime, configured_days: dict[str, int]) -> datetime:
    return response_period(basis, configured_days).after(requested_at)


def latest_extension(basis: LegalBasis, original_due_at: datetime) -> datetime | None:
    """The furthest the deadline may move, or None when the law allows no extension."""
    limit = EXTENSION_LIMITS.get(basis)
    return limit.after(original_due_at) if limit else None
