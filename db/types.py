"""Column types and SQL functions that behave the same on SQLite and PostgreSQL.

SQLite has no timestamp type: it stores text and hands back naive datetimes,
so every timestamp goes through `UTCDateTime`, which stores UTC and returns
timezone-aware UTC on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator


def now_utc() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored as UTC, read back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware one (e.g. datetime.now(UTC))")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class utcnow(FunctionElement[datetime]):  # noqa: N801 - reads like SQL's now()
    """The database's current UTC time, at sub-second precision on both backends."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    # CURRENT_TIMESTAMP has whole seconds only; %f adds milliseconds.
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class utc_day(FunctionElement[str]):  # noqa: N801 - reads like SQL's date()
    """The UTC calendar day of a timestamp column, as 'YYYY-MM-DD' text."""

    type = String()
    inherit_cache = True


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as UTC text 'YYYY-MM-DD HH:MM:SS...', so the day is the prefix.
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"
