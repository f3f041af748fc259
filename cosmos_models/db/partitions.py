"""Range partitions of the progress table on PostgreSQL: listing them, creating them ahead.

Migration 0006 makes ``progress`` on PostgreSQL a table partitioned by ``RANGE (timestamp)``:
one partition per month (``progress_pYYYYMMDD``, named by its first day), ``progress_history``
for anything older than the first month, and ``progress_default`` for whatever no range covers,
so that no insert ever fails. ``maintain`` creates the partitions ahead of time (from cron); event
retention drops whole partitions older than its cutoff (``services.partition_retention``).
SQLite and MariaDB keep a plain table: there is nothing to maintain there.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, text

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.types import backend_family, utcnow

INTERVALS: Final = ("month", "week", "day")
"""How long a partition created by ``maintain`` spans."""

DEFAULT_PARTITION: Final = "progress_default"
MAINTAIN_LOCK: Final = 0x636F736D6F732070
"""pg_advisory_xact_lock key taken by whatever creates or drops partitions ("cosmos p")."""
# Each partition with its bounds; MINVALUE and DEFAULT come back as NULL bounds.
_PARTITIONS = text(
    """
    SELECT name, bound = 'DEFAULT' AS is_default,
           CASE WHEN m[1] IS NULL OR m[1] = 'MINVALUE' THEN NULL
                ELSE btrim(m[1], '''')::timestamptz END AS lower,
           CASE WHEN m[2] IS NULL OR m[2] = 'MAXVALUE' THEN NULL
                ELSE btrim(m[2], '''')::timestamptz END AS upper
    FROM (SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
                 regexp_match(pg_get_expr(c.relpartbound, c.oid),
                              'FROM \\((.*)\\) TO \\((.*)\\)') AS m
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = to_regclass('progress')) bounds
    ORDER BY is_default, lower NULLS FIRST
    """
)


@dataclass(frozen=True)
class Partition:
    """One partition of progress: ``[lower, upper)``; ``None`` for MINVALUE (or the default)."""

    name: str
    lower: datetime | None
    upper: datetime | None
    is_default: bool = False


_PARTITION_NAME: Final = re.compile(r"progress_(p[0-9]{8}|history|default)")


def is_partition_name(name: str | None) -> bool:
    """True for the names this module gives the partitions of ``progress``."""
    return name is not None and _PARTITION_NAME.fullmatch(name) is not None


def quoted(name: str) -> str:
    """``name`` as a PostgreSQL identifier: partitions come from the catalog, where any name
    an administrator attached by hand may appear."""
    return '"' + name.replace('"', '""') + '"'


def is_partitioned(connection: Connection) -> bool:
    """Whether ``progress`` is a partitioned table (PostgreSQL after migration 0006)."""
    if backend_family(connection.dialect) != "postgresql":
        return False
    found = connection.execute(
        text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('progress')")
    ).first()
    return found is not None


def list_partitions(connection: Connection) -> list[Partition]:
    """The partitions of progress, oldest first, the default last (none unless partitioned)."""
    if not is_partitioned(connection):
        return []
    return [
        Partition(row.name, row.lower, row.upper, bool(row.is_default))
        for row in connection.execute(_PARTITIONS)
    ]


def floor_to(moment: datetime, interval: str) -> datetime:
    """The start of the ``interval`` (month, week from Monday, day; UTC) holding ``moment``.

    Raises ``ValueError`` for another interval.
    """
    if interval not in INTERVALS:
        raise InvalidArgumentError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "month":
        return day.replace(day=1)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return day


def next_bound(moment: datetime, interval: str) -> datetime:
    """The start of the ``interval`` after the one holding ``moment``."""
    start = floor_to(moment, interval)
    if interval == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + timedelta(days=7 if interval == "week" else 1)


@dataclass
class MaintainResult:
    """What ``maintain`` did: the partitions it created and the rows it moved out of the
    default partition into them; ``partitioned`` is False where there is nothing to maintain."""

    partitioned: bool
    created: list[str] = field(default_factory=list)
    moved_rows: int = 0
    covered_until: datetime | None = None


def maintain(
    db: DatabaseConnection,
    *,
    ahead: int = 3,
    interval: str = "month",
    now: datetime | None = None,
) -> MaintainResult:
    """Create the progress partitions up to ``ahead`` intervals past the current one.

    Idempotent and safe to run concurrently (from cron): one transaction under an advisory lock,
    which finds what exists and adds only what is missing, starting at the newest partition's
    upper bound (so partitions never overlap, whatever ``interval`` earlier runs used). Rows that
    the default partition holds for a new range move into it. On SQLite, MariaDB and an
    unpartitioned PostgreSQL table it does nothing (``partitioned=False``). Raises ``ValueError``
    for a bad ``ahead``/``interval``, ``DatabaseError`` from the server (e.g. a role that does
    not own progress).
    """
    if isinstance(ahead, bool) or not isinstance(ahead, int) or not 0 <= ahead <= 120:
        raise InvalidArgumentError(f"ahead must be an integer from 0 to 120, got {ahead!r}")
    if interval not in INTERVALS:
        raise InvalidArgumentError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
    moment = now or utcnow()
    with db.connect() as connection, connection.begin():
        if not is_partitioned(connection):
            return MaintainResult(partitioned=False)
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MAINTAIN_LOCK})
        partitions = list_partitions(connection)
        uppers = [p.upper for p in partitions if p.upper is not None]
        target = floor_to(moment, interval)
        for _ in range(ahead + 1):
            target = next_bound(target, interval)
        cursor = max(uppers) if uppers else floor_to(moment, interval)
        result = MaintainResult(partitioned=True, covered_until=max(cursor, target))
        while cursor < target:
            upper = next_bound(cursor, interval)
            name = f"progress_p{cursor.astimezone(UTC):%Y%m%d}"
            result.moved_rows += _create_partition(connection, name, cursor, upper, partitions)
            result.created.append(name)
            cursor = upper
        return result


def _create_partition(
    connection: Connection,
    name: str,
    lower: datetime,
    upper: datetime,
    partitions: list[Partition],
) -> int:
    """Create partition ``name`` for ``[lower, upper)``; return the rows moved from the default.

    Rows the default partition holds in that range (events stamped far ahead, or restored
    into a range whose partition was dropped) would make the new partition fail: the default is
    detached for the moment, they are moved, and it is attached again, in this transaction.
    """
    bounds: dict[str, Any] = {"lower": lower, "upper": upper}
    has_default = any(p.is_default for p in partitions)
    strays = 0
    if has_default:
        strays = int(
            connection.execute(
                text(
                    f"SELECT count(*) FROM {DEFAULT_PARTITION} "
                    'WHERE "timestamp" >= :lower AND "timestamp" < :upper'
                ),
                bounds,
            ).scalar_one()
        )
    if strays:
        connection.execute(text(f"ALTER TABLE progress DETACH PARTITION {DEFAULT_PARTITION}"))
    # Bounds as literals: DDL takes no bind parameters. isoformat() of an aware datetime.
    connection.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF progress FOR VALUES "
            f"FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
        )
    )
    if strays:
        where = 'WHERE "timestamp" >= :lower AND "timestamp" < :upper'
        connection.execute(
            text(f"INSERT INTO progress SELECT * FROM {DEFAULT_PARTITION} {where}"), bounds
        )
        connection.execute(text(f"DELETE FROM {DEFAULT_PARTITION} {where}"), bounds)
        connection.execute(
            text(f"ALTER TABLE progress ATTACH PARTITION {DEFAULT_PARTITION} DEFAULT")
        )
    return strays


PARTITIONED_UNIQUE: Final = "uq_progress_run_id_seq_timestamp"
"""UNIQUE (run_id, seq, timestamp): what UNIQUE (run_id, seq) becomes on a partitioned table."""
_EXPECTED_KEYS: Final = {
    "p": ("pk_progress", ["id", "timestamp"]),
    "u": (PARTITIONED_UNIQUE, ["run_id", "seq", "timestamp"]),
}


def partition_differences(connection: Connection) -> list[str]:
    """How a partitioned progress table differs from what migration 0006 makes of it.

    Autogenerate cannot compare these: the primary key (id, timestamp), the unique constraint
    with the partition key, and the default partition that keeps every insert possible.
    """
    rows = connection.execute(
        text(
            "SELECT con.contype, con.conname, array_agg(a.attname ORDER BY k.n) AS columns "
            "FROM pg_constraint con "
            "CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(num, n) "
            "JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num "
            "WHERE con.conrelid = to_regclass('progress') AND con.contype IN ('p', 'u') "
            "GROUP BY con.contype, con.conname"
        )
    ).all()
    found = {(row.contype, row.conname): list(row.columns) for row in rows}
    differences = []
    for kind, (name, columns) in _EXPECTED_KEYS.items():
        if found.get((kind, name)) != columns:
            differences.append(
                f"partitioned progress lacks {name} ({', '.join(columns)}): "
                f"it has {sorted(name for _, name in found) or 'none'}"
            )
    if not any(p.is_default for p in list_partitions(connection)):
        differences.append(
            f"partitioned progress has no {DEFAULT_PARTITION} partition: inserts outside every "
            "range would fail"
        )
    return differences
