"""The command line's counterpart of ``problems.py``: service errors become one-line messages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from pydantic import ValidationError

from app.core.errors import UnlearndError


@contextmanager
def as_click_errors() -> Iterator[None]:
    try:
        yield
    except UnlearndError as exc:
        field = exc.extensions.get("field")
        raise click.ClickException(f"{field}: {exc.detail}" if field else exc.detail) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise click.ClickException(f"{location}: {first['msg']}") from None
