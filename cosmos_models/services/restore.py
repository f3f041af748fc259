"""Restoring archived rows: validated by the models first, then all or nothing in one transaction.

Prompts and runs are matched by id (the same content, or a conflict); events by ``(run_id, seq)``
(events archived before seq existed by content, then numbered); context rows (a retention
batch's runs and prompts) are inserted only when absent. Restored runs get their progress
summary recomputed.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, func, inspect, select, text, update

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import PROGRESS, RUNS, TABLES
from cosmos_models.errors import CosmosModelsError
from cosmos_models.models.base import ValidatedTable
from cosmos_models.models.progress import Progress
from cosmos_models.models.prompt import Prompt
from cosmos_models.models.run import Run
from cosmos_models.models.types import backend_family
from cosmos_models.services.archive import ArchiveError, Line, read_records
from cosmos_models.services.archive_keys import is_context, keys_of


class RestoreConflictError(CosmosModelsError):
    """An archived prompt or run id exists in the target with other content; nothing restored."""


@dataclass
class RestoreResult:
    """How many archived rows ``restore`` put back, and how many were already there (exact).

    ``renumbered`` counts the progress rows stored under a new id because the target database
    uses their archived id for another event. ``context`` counts the context rows (runs kept by
    event retention, their prompts) inserted because the target lacked them; they are counted
    in ``restored`` too. Context rows the target has are left alone and counted nowhere.
    """

    restored: dict[str, int] = field(default_factory=dict)
    already_present: int = 0
    present: dict[str, int] = field(default_factory=dict)
    renumbered: int = 0
    context: int = 0


MODELS: dict[str, type[ValidatedTable]] = {"prompts": Prompt, "runs": Run, "progress": Progress}


def _field_names(model: type[ValidatedTable]) -> dict[str, str]:
    """Column name to model field name (``metadata`` is ``run_metadata`` on a Run)."""
    return {attr.columns[0].name: attr.key for attr in inspect(model).column_attrs}


_FIELDS = {name: _field_names(model) for name, model in MODELS.items()}


# The run's progress summary is derived from its events (and latest_progress_id names an event by
# this database's id): archives written before migration 0005 lack it, and restore recomputes it,
# so it is neither required in an archive nor compared with a stored run. A progress row archived
# before 0005 has no seq either: restore numbers it after its run's last event.
_SUMMARY_COLUMNS: frozenset[str] = frozenset(
    column.name for column in RUNS.columns if column.name.startswith("latest_")
) | {"progress_count"}


_MAY_BE_MISSING: dict[str, frozenset[str]] = {
    "prompts": frozenset(),
    "runs": _SUMMARY_COLUMNS,
    "progress": frozenset({"seq"}),
}


# What makes two archived (or stored) events with the same (run_id, seq) the same event.
_EVENT_COLUMNS: tuple[str, ...] = ("timestamp", "stage", "percentage", "message")


def _validated(path: Path, line: Line) -> dict[str, Any]:
    """An archived row checked by its model's rules, as typed values keyed by column name.

    Every NOT NULL column must be there (a default would invent data); unknown columns are
    refused. Raises ``ArchiveError`` naming the member, line and field.
    """
    assert line.record is not None
    name, row = str(line.record["table"]), line.record["row"]
    where = f"archive {path} member {line.member}, line {line.line} ({name})"
    columns = TABLES[name].columns
    fields = _FIELDS[name]
    for column_name in row:
        if column_name not in fields:
            raise ArchiveError(f"{where}: field {column_name!r} is not a column of {name}")
    for column in columns:
        if (
            column.name not in row
            and not column.nullable
            and column.name not in _MAY_BE_MISSING[name]
        ):
            raise ArchiveError(f"{where}: field {column.name!r} is missing")
    # Missing columns take their model defaults (only nullable or derived ones can be missing).
    data = {fields[column.name]: row[column.name] for column in columns if column.name in row}
    try:
        checked = MODELS[name].__validator__.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        columns_of = {value: key for key, value in fields.items()}
        location = ".".join(str(part) for part in error["loc"])
        column_name = columns_of.get(str(error["loc"][0]), location) if error["loc"] else name
        raise ArchiveError(f"{where}: field {column_name!r}: {error['msg']}") from None
    values = {column.name: getattr(checked, fields[column.name]) for column in columns}
    if name == "progress" and values["id"] is None:
        raise ArchiveError(f"{where}: field 'id' is missing")
    return values


def _first_difference(archived: dict[str, Any], present: Any, columns: Iterable[Any]) -> str | None:
    """The first column where a stored row differs from the archived one, else None."""
    for column in columns:
        # UTCDateTime gives aware values on every backend, so datetimes compare as instants.
        if present._mapping[column] != archived[column.name]:
            return str(column.name)
    return None


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


Keyed = dict[str, dict[str, tuple[Line, dict[str, Any]]]]


def _read_archive(archive_path: Path) -> tuple[Keyed, Keyed, list[dict[str, Any]]]:
    """Every archived row, validated: prompts and runs by id, their context rows by id (the
    last snapshot of each), progress in archive order."""
    keyed: Keyed = {"prompts": {}, "runs": {}}
    context: Keyed = {"prompts": {}, "runs": {}}
    progress: list[dict[str, Any]] = []
    for line in read_records(archive_path):
        assert line.record is not None
        values = _validated(archive_path, line)
        name = str(line.record["table"])
        if name == "progress":
            progress.append(values)
            continue
        if is_context(line.record):
            # Snapshots of a row that kept changing: they may differ, and none is a conflict.
            context[name][values["id"]] = (line, values)
            continue
        earlier = keyed[name].get(values["id"])
        if earlier is not None and earlier[1] != values:
            raise RestoreConflictError(
                f"archive {archive_path} holds two different {name} rows with id "
                f"{values['id']!r} (member {earlier[0].member}, line {earlier[0].line} and "
                f"member {line.member}, line {line.line}); nothing restored"
            )
        keyed[name].setdefault(values["id"], (line, values))
    return keyed, context, progress


def restore(db: DatabaseConnection, archive_path: Path, *, batch_size: int = 1000) -> RestoreResult:
    """Put archived rows back (prompts, runs, then progress) in one transaction.

    Every row is validated by its model before anything is written. Prompts and runs already
    present (same id, same content) are left alone; progress events are matched by content
    (``archive.identity_of``, repeats counted), so a second restore is a no-op and a restore into
    another database stores every row, under a new id where the archived one is taken.
    Raises ``FileNotFoundError``, ``ArchiveError`` (not ours, corrupt, truncated, invalid row:
    naming member, line and field) or ``RestoreConflictError``; then nothing is written.
    """
    keyed, context, archived_progress = _read_archive(archive_path)
    result = RestoreResult(restored=dict.fromkeys(TABLES, 0), present=dict.fromkeys(TABLES, 0))
    recreated: list[str] = []
    with db.get_session() as session:
        connection = session.connection()
        for name in ("prompts", "runs"):
            inserted = _restore_context(connection, name, context[name], keyed[name], batch_size)
            result.context += len(inserted)
            if name == "runs":
                recreated = inserted
            table = TABLES[name]
            missing = []
            for chunk in _chunks(list(keyed[name]), batch_size):
                stored = {
                    row.id: row
                    for row in connection.execute(select(table).where(table.c.id.in_(chunk)))
                }
                for row_id in chunk:
                    line, values = keyed[name][row_id]
                    if row_id not in stored:
                        missing.append(values)
                        continue
                    compared = [c for c in table.columns if c.name not in _MAY_BE_MISSING[name]]
                    differs = _first_difference(values, stored[row_id], compared)
                    if differs is not None:
                        raise RestoreConflictError(
                            f"{name[:-1]} {row_id!r} of archive {archive_path} (member "
                            f"{line.member}, line {line.line}) exists in the database with a "
                            f"different {differs!r}; nothing restored"
                        )
            for chunk in _chunks(missing, batch_size):
                connection.execute(table.insert(), list(chunk))
            result.restored[name] = len(missing) + len(inserted)
            result.present[name] = len(keyed[name]) - len(missing)
        _restore_progress(connection, archived_progress, result, batch_size)
        # A run recreated from context counts only the events restored with it.
        _resummarise(connection, recreated, batch_size)
    result.already_present = sum(result.present.values())
    return result


def _restore_context(
    connection: Connection,
    name: str,
    context: dict[str, tuple[Line, dict[str, Any]]],
    archived: dict[str, tuple[Line, dict[str, Any]]],
    size: int,
) -> list[str]:
    """Insert the context rows whose id the database lacks (and the archive holds no row for).

    A context row is never compared with a stored one: its run went on changing after it was
    archived. Returns the ids inserted.
    """
    table = TABLES[name]
    wanted = sorted(row_id for row_id in context if row_id not in archived)
    inserted: list[str] = []
    for chunk in _chunks(wanted, size):
        stored = set(connection.execute(select(table.c.id).where(table.c.id.in_(chunk))).scalars())
        fresh = [context[row_id][1] for row_id in chunk if row_id not in stored]
        if fresh:
            connection.execute(table.insert(), fresh)
        inserted.extend(values["id"] for values in fresh)
    return inserted


def _restore_progress(
    connection: Connection, archived: list[dict[str, Any]], result: RestoreResult, size: int
) -> None:
    """Insert the archived progress events the database lacks, then fix their runs' summaries.

    Numbered events are the same event when their ``(run_id, seq)`` is; one stored with other
    content is a conflict. Events archived before numbering are matched by content (a multiset
    difference) and numbered after their run's last event.
    """
    run_ids = sorted({values["run_id"] for values in archived})
    stored: list[dict[str, Any]] = []
    for chunk in _chunks(run_ids, size):
        stored.extend(
            dict(row._mapping)
            for row in connection.execute(select(PROGRESS).where(PROGRESS.c.run_id.in_(chunk)))
        )
    by_seq = {(row["run_id"], row["seq"]): row for row in stored}
    missing: list[dict[str, Any]] = []
    for values in archived:
        if values["seq"] is None:
            continue
        have = by_seq.get((values["run_id"], values["seq"]))
        if have is None:
            by_seq[(values["run_id"], values["seq"])] = values
            missing.append(values)
        elif any(have[column] != values[column] for column in _EVENT_COLUMNS):
            raise RestoreConflictError(
                f"progress event {values['seq']} of run {values['run_id']!r} exists in the "
                "database with other content; nothing restored"
            )
    missing.extend(_number_unnumbered(connection, archived, stored, by_seq, size))
    taken: set[int] = set()
    for chunk in _chunks([values["id"] for values in missing], size):
        taken.update(
            connection.execute(select(PROGRESS.c.id).where(PROGRESS.c.id.in_(chunk))).scalars()
        )
    issued = _ids_issued(connection) if missing else None
    keep, renumber = [], []
    for values in missing:
        if values["id"] in taken or (issued is not None and values["id"] > issued):
            renumber.append({key: value for key, value in values.items() if key != "id"})
        else:
            keep.append(values)
    for chunk in _chunks(keep, size):
        connection.execute(PROGRESS.insert(), list(chunk))
    for chunk in _chunks(renumber, size):
        connection.execute(PROGRESS.insert(), list(chunk))
    _resummarise(connection, sorted({values["run_id"] for values in missing}), size)
    result.restored["progress"] = len(missing)
    result.present["progress"] = len(archived) - len(missing)
    result.renumbered = len(renumber)


def _ids_issued(connection: Connection) -> int | None:
    """On PostgreSQL, the last id the progress sequence has handed out (0: none yet); None
    elsewhere.

    Explicit ids do not move PostgreSQL's sequence, and moving it by ``setval`` is neither
    transactional nor safe beside writers (it can move it back, or below an id a concurrent
    writer just took: ids handed out twice). So a restored event keeps its archived id only if
    the sequence already handed that id out (it will never hand it out again); any other is
    renumbered. SQLite's AUTOINCREMENT and MariaDB's AUTO_INCREMENT move past explicit ids.
    """
    if backend_family(connection.dialect) != "postgresql":
        return None
    issued = connection.execute(
        text(
            "SELECT pg_sequence_last_value("
            "CAST(pg_get_serial_sequence('progress', 'id') AS regclass))"
        )
    ).scalar()
    return int(issued or 0)


def _number_unnumbered(
    connection: Connection,
    archived: list[dict[str, Any]],
    stored: list[dict[str, Any]],
    by_seq: dict[tuple[str, int], dict[str, Any]],
    size: int,
) -> list[dict[str, Any]]:
    """Events archived before migration 0005 that the database lacks, numbered after the last."""
    unnumbered = [values for values in archived if values["seq"] is None]
    if not unnumbered:
        return []
    present = set(keys_of("progress", [{**row, "seq": None} for row in stored]))
    fresh = [
        values
        for values, key in zip(unnumbered, keys_of("progress", unnumbered), strict=True)
        if key not in present
    ]
    last: dict[str, int] = {}
    for run_id, seq in by_seq:
        last[run_id] = max(last.get(run_id, 0), seq)
    for chunk in _chunks(sorted({values["run_id"] for values in fresh}), size):
        for run_id, latest_seq in connection.execute(
            select(RUNS.c.id, RUNS.c.latest_seq).where(RUNS.c.id.in_(chunk))
        ):
            last[run_id] = max(last.get(run_id, 0), latest_seq)
    numbered = []
    for values in sorted(fresh, key=lambda v: (v["run_id"], v["timestamp"], v["id"] or 0)):
        last[values["run_id"]] = last.get(values["run_id"], 0) + 1
        numbered.append({**values, "seq": last[values["run_id"]]})
    return numbered


def _resummarise(connection: Connection, run_ids: list[str], size: int) -> None:
    """Recompute the progress summary of runs whose events were restored.

    ``latest_seq`` never goes down (it numbers the run's next event); the count is of the events
    stored; the latest fields come from the event with the greatest seq.
    """
    for chunk in _chunks(run_ids, size):
        counts = {
            row.run_id: (int(row.events), int(row.top))
            for row in connection.execute(
                select(
                    PROGRESS.c.run_id,
                    func.count().label("events"),
                    func.max(PROGRESS.c.seq).label("top"),
                )
                .where(PROGRESS.c.run_id.in_(chunk))
                .group_by(PROGRESS.c.run_id)
            )
        }
        for run_id, latest_seq in connection.execute(
            select(RUNS.c.id, RUNS.c.latest_seq).where(RUNS.c.id.in_(chunk))
        ).all():
            count, top = counts.get(run_id, (0, 0))
            values: dict[str, Any] = {
                "progress_count": count,
                "latest_seq": max(latest_seq, top),
                "updated_at": RUNS.c.updated_at,
            }
            newest = connection.execute(
                select(PROGRESS).where(
                    PROGRESS.c.run_id == run_id, PROGRESS.c.seq == values["latest_seq"]
                )
            ).one_or_none()
            if newest is not None:
                values.update(
                    latest_stage=newest.stage,
                    latest_percentage=newest.percentage,
                    latest_message=newest.message,
                    latest_at=newest.timestamp,
                    latest_progress_id=newest.id,
                )
            connection.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))
