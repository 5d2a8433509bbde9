"""The database every store shares: one MetaData, engines with the SQLite pragmas, migrations.

Any SQLAlchemy URL works: a SQLite file by default, PostgreSQL when several machines share the
work. Opening a store creates the tables it lacks and adds the columns marked ``ADDED_LATER``
that an older database lacks, so a database from an earlier release is upgraded on first use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")

metadata = sa.MetaData()

# Column.info marker for a column added to a table after databases with that table were in use:
# create_all creates missing tables but never alters an existing one, so such columns are added
# by ALTER TABLE when missing. They must be nullable, so existing rows read as None.
ADDED_LATER: dict[str, Any] = {"added_later": True}

# WAL lets readers run beside the writer; a busy writer is waited for, not failed on.
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=30000", "PRAGMA foreign_keys=ON")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


# Engines kept per URL in this process: a task opens a store per call, and a new engine each time
# cost a connection, its pragmas and a pool per call (about a tenth of the executor's CPU, measured
# with py-spy). A few URLs at most in a service; tests open many, so the oldest are let go.
ENGINES_KEPT = 8
_engines: OrderedDict[str, Engine] = OrderedDict()
_engines_lock = threading.Lock()


def open_engine(url: str) -> Engine:
    """This process's engine on ``url``, with every table registered so far and the columns added
    since an older release (checked on every open: cheap, and a database may be replaced)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _new_engine(url)
        _engines.move_to_end(url)
        while len(_engines) > ENGINES_KEPT:
            _engines.popitem(last=False)[1].dispose()
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _new_engine(url: str) -> Engine:
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, pool_pre_ping=not sqlite)
    if sqlite:
        _use_sqlite_pragmas(engine)
    return engine


class Store:
    """One store's connection to the database: every method of a subclass is one short transaction,
    so one store object is shared by threads and tasks."""

    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)

    def close(self) -> None:
        """Nothing to release: the engine and its connections stay for this process's next store."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _write(self, statement: Any) -> int:
        with self.engine.begin() as conn:
            return conn.execute(statement).rowcount

    def _read(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query))


def _use_sqlite_pragmas(engine: Engine) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead
    # of failing halfway with "database is locked".
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _add_missing_columns(engine: Engine) -> None:
    """Add the ADDED_LATER columns an older database lacks.

    Two processes opening the same old database may both try: the loser's ALTER fails on the
    column the winner added, which is then present, so only a column still missing is an error.
    """
    for table in metadata.sorted_tables:
        added = [column for column in table.columns if column.info.get("added_later")]
        if not added:
            continue
        present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
        for column in added:
            if column.name in present:
                continue
            ddl = sa.schema.CreateColumn(column).compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
            except DBAPIError:
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise


def in_batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``: keeps an IN list or a QRS filter within its limits."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
