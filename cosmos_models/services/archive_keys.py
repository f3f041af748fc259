"""What makes an archived row the same row in any database: identities, counted as a multiset."""

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cosmos_models.errors import InvalidArgumentError

Key = tuple[Any, ...]


Record = dict[str, Any]


def _instant(value: Any) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise InvalidArgumentError(f"timestamp {value!r} is not a date and time")
    if moment.tzinfo is None:
        raise InvalidArgumentError(f"timestamp {value!r} has no time zone")
    return moment.astimezone(UTC).isoformat()


def identity_of(table: str, row: Record) -> Key:
    """What makes an archived row the same row in any database.

    Prompts and runs: their string ids (random, so not shared by chance across databases).
    Progress: ``(run_id, seq)``, its place in its run's commit order, never its integer id,
    which another database (or SQLite before migration 0003) may give to a different event.
    Rows archived before events were numbered (migration 0005) have no ``seq``: their content
    identifies them, and ``IdentityCounter`` tells identical events of a run apart (multiset
    semantics). Raises ``KeyError``/``ValueError`` for a row that lacks the fields.
    """
    if table != "progress":
        return (table, str(row["id"]))
    if row.get("seq") is not None:
        return (table, str(row["run_id"]), int(row["seq"]))
    return content_identity(row)


def content_identity(row: Record) -> Key:
    """A progress event by its content alone (for rows archived without a ``seq``)."""
    return (
        "progress",
        str(row["run_id"]),
        _instant(row["timestamp"]),
        str(row["stage"]),
        float(row["percentage"]),
        row["message"],
    )


class IdentityCounter:
    """Keys of a sequence of rows: ``identity_of``, plus an occurrence number for content keys.

    The n-th copy of an identical unnumbered progress event gets ``n``, so a database holding
    three copies and an archive holding two differ by exactly one, whatever their ids and order.
    """

    def __init__(self) -> None:
        self._seen: Counter[Key] = Counter()

    def key(self, table: str, row: Record) -> Key:
        """The key of the next row; counts it."""
        identity = identity_of(table, row)
        if table != "progress" or len(identity) == 3:
            return identity  # an id, or (run_id, seq), is one row however often it is archived
        occurrence = self._seen[identity]
        self._seen[identity] += 1
        return (*identity, occurrence)


def is_context(record: Record) -> bool:
    """Whether an archive record is a context row (a kept run or its prompt), not a deleted one."""
    return record.get("context") is True


def record_key(counter: IdentityCounter, record: Record) -> Key:
    """The key of an archive record: its row's key, under ``"context"`` for a context row.

    Context rows have keys of their own: a run archived as context by event retention and later
    pruned whole must still be archived (as a row) when it is deleted.
    """
    key = counter.key(record["table"], record["row"])
    return ("context", *key) if is_context(record) else key


def keys_of(table: str, rows: Iterable[Record]) -> list[Key]:
    """The keys of ``rows`` of one table, counted among themselves."""
    counter = IdentityCounter()
    return [counter.key(table, row) for row in rows]
