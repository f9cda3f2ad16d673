"""Bounded field types for request schemas and path/query parameters.

Every value a client sends must fit where it is going: integers in the width of their column,
floats finite (JSON has no NaN), datetimes convertible to UTC with room for deadline arithmetic.
Out of range is a 422 at validation, never a database error later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Deadlines add months to a request's dates; keep every accepted instant far from datetime's edges.
EARLIEST_YEAR, LATEST_YEAR = 1900, 9000

Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
PositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
PositiveInt64 = Annotated[int, Field(ge=1, le=INT64_MAX)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _within_years(value: datetime) -> datetime:
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("datetime is out of range once converted to UTC") from None
    if not EARLIEST_YEAR <= in_utc.year <= LATEST_YEAR:
        raise ValueError(f"datetime must fall between the years {EARLIEST_YEAR} and {LATEST_YEAR} (UTC)")
    return value


BoundedDatetime = Annotated[AwareDatetime, AfterValidator(_within_years)]
