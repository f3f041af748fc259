"""Prune archives: append-only, crash-safe gzip'ed JSON lines that are recognisably ours.

Layout (version 2): gzip member 1 holds one header line,
``{"format": "cosmos_models.archive", "version": 2, "created_at": ...}``; every later member is one
prune batch of ``{"table": ..., "row": {...}}`` lines, each ending in a newline. ``zcat`` reads it.
Version 1 archives (no header; written before this format) are read by ``restore`` only.

A prompt or run line may also say ``"context": true``: event retention (``prune
--progress-older-than``) deletes events but keeps their run, and archives the run and its prompt
only so that a restore into an empty database keeps its foreign keys. Such a row is a snapshot of
a row that goes on changing: ``restore`` inserts it only when its id is absent and never compares
it. The version stays 2: every reader of version 2 refuses a line with a key it does not know
(as corrupt), so no older reader can take a context row for an archived one, and a bump would
stop prune appending to the version 2 archives that exist.

Reading is streaming and bounded: a path is ``stat``-ed before it is opened, so a device, FIFO or
directory is refused without a byte read; a foreign file is refused after its first bytes; lines
are bounded. What a scan can find, and who may act on it:

* *not ours* (no header, not gzip, empty, not a regular file) and *corrupt* (zlib or CRC error,
  bad JSON, an unknown table, a member ending mid-line): refused by every command, file untouched;
* *truncated* (the last member ends early and what is there decodes cleanly): what a prune killed
  mid-write leaves. Its rows were never deleted (the delete follows the fsync), so only ``prune``
  may cut it off before appending; ``restore`` refuses it and says so.
"""

import gzip
import json
import os
import secrets
import stat
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cosmos_models.errors import CosmosModelsError
from cosmos_models.services.archive_keys import (
    IdentityCounter,
    Key,
    Record,
    is_context,
    record_key,
)

FORMAT = "cosmos_models.archive"
VERSION = 2
TABLE_NAMES = ("prompts", "runs", "progress")


_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024
# A header line is tiny; a foreign gzip file is given up on after this much output.
_MAX_HEADER = 4096
# Bounded memory on hostile input: no row of ours comes near this.
_MAX_LINE = 64 * 2**20


class ArchiveError(CosmosModelsError):
    """An archive path cannot be used; the message names the path (and member and line)."""


class NotAnArchiveError(ArchiveError):
    """The path exists but is not an archive of ours (or not a regular file); left untouched."""


class CorruptArchiveError(ArchiveError):
    """The archive is damaged (named member and line); refused by prune and restore alike."""


class TruncatedArchiveError(ArchiveError):
    """The last member of the archive ends early: a prune was killed while writing it."""


@dataclass(frozen=True)
class Line:
    """One record of an archive, where it was found, or (``record is None``) a member's end."""

    member: int
    line: int
    record: Record | None


@dataclass
class ScanResult:
    """What a complete scan found: the format version and where a truncated tail starts."""

    version: int = 0
    truncated_member: int | None = None
    truncated_offset: int | None = None
    end_offset: int = 0


def check_regular_file(path: Path) -> os.stat_result | None:
    """The ``stat`` of an existing regular file (symlinks followed), ``None`` if nothing is there.

    Raises ``NotAnArchiveError`` for a device, FIFO, directory, socket or dangling symlink, before
    anything is opened (opening a FIFO blocks; reading /dev/zero never ends).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise NotAnArchiveError(
                f"archive {path} is a symlink to nothing; refusing to write through it"
            ) from None
        return None
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(info.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(info.st_mode)
            else "a device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "not a regular file"
        )
        raise NotAnArchiveError(f"archive {path} is {kind}, not an archive file; left untouched")
    return info


def _open_checked(path: Path, info: os.stat_result, mode: str) -> IO[bytes]:
    """Open ``path``, making sure it is still the regular file that was ``stat``-ed."""
    flags = (os.O_RDWR if "+" in mode else os.O_RDONLY) | os.O_NONBLOCK
    fd = os.open(path, flags)
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(
        opened.st_mode
    ):
        os.close(fd)
        raise NotAnArchiveError(f"archive {path} changed while it was being opened; untouched")
    return os.fdopen(fd, mode)


def _parse_record(path: Path, member: int, line_no: int, raw: bytes) -> Record:
    where = f"archive {path} is corrupt in member {member}, line {line_no}"
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptArchiveError(f"{where}: not JSON ({exc})") from None
    if not isinstance(record, dict) or set(record) - {"context"} != {"table", "row"}:
        raise CorruptArchiveError(f"{where}: not a {{'table', 'row'}} record")
    if record["table"] not in TABLE_NAMES:
        raise CorruptArchiveError(f"{where}: field 'table': unknown table {record['table']!r}")
    if "context" in record and (record["context"] is not True or record["table"] == "progress"):
        # Only kept prompts and runs are context; an event in an archive was always deleted.
        raise CorruptArchiveError(
            f"{where}: field 'context': must be true, on a prompts or runs line only"
        )
    if not isinstance(record["row"], dict):
        raise CorruptArchiveError(f"{where}: field 'row' is not a JSON object")
    return record


def _read_header(path: Path, raw: bytes) -> int:
    """The version of a header line, 1 for a headerless (version 1) first record, else refuse."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        header = None
    if isinstance(header, dict) and header.get("format") == FORMAT:
        if header.get("version") != VERSION:
            raise NotAnArchiveError(
                f"archive {path} has format version {header.get('version')!r}; "
                f"this version reads {VERSION} (and 1)"
            )
        return VERSION
    if (
        isinstance(header, dict)
        and set(header) == {"table", "row"}
        and header["table"] in TABLE_NAMES
        and isinstance(header["row"], dict)
    ):
        return 1
    raise NotAnArchiveError(f"archive {path} is not an archive of cosmos_models; left untouched")


class _Reader:
    """Inflates an open archive member by member, a chunk at a time, counting lines."""

    def __init__(self, path: Path, handle: IO[bytes], pending: bytes) -> None:
        self.path = path
        self.handle = handle
        self.pending = pending
        self.offset = 0  # the file offset of pending[0]
        self.line_no = 0

    def fill(self) -> bool:
        """Make sure some compressed input is pending; False at the end of the file."""
        if not self.pending:
            self.pending = self.handle.read(_CHUNK)
        return bool(self.pending)

    def broken(self, member: int, problem: str) -> ArchiveError:
        """A damaged first member means the file is not ours; a later one, that it is corrupt."""
        if member == 1:
            return NotAnArchiveError(
                f"archive {self.path} is not an archive of cosmos_models ({problem}); "
                "left untouched"
            )
        return CorruptArchiveError(
            f"archive {self.path} is corrupt in member {member} "
            f"(after line {self.line_no}): {problem}"
        )

    def member_lines(self, member: int) -> Generator[bytes, None, bool]:
        """The raw lines of one member; returns False if the file ends inside it."""
        inflater = zlib.decompressobj(wbits=31)
        buffer = b""
        while not inflater.eof:
            if not self.fill():
                return False
            limit = _MAX_HEADER if self.line_no == 0 else _MAX_LINE
            try:
                output = inflater.decompress(self.pending, min(limit, _CHUNK * 16))
            except zlib.error as exc:
                raise self.broken(member, str(exc)) from None
            rest = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            self.offset += len(self.pending) - len(rest)
            self.pending = rest
            *lines, buffer = (buffer + output).split(b"\n")
            yield from lines
            if len(buffer) > limit:
                raise self.broken(member, "no header line" if member == 1 else "line too long")
        if buffer:
            raise self.broken(member, "it ends mid-line")
        return True

    def records(self, member: int, result: "ScanResult") -> Generator[Line, None, bool]:
        """The records of one member (the header is checked, not yielded); False if cut off."""
        raws = self.member_lines(member)
        while True:
            try:
                raw = next(raws)
            except StopIteration as stop:
                complete = bool(stop.value)
                break
            self.line_no += 1
            if self.line_no == 1:
                result.version = _read_header(self.path, raw)
                if result.version == VERSION:
                    continue
            elif member == 1 and result.version == VERSION:
                raise self.broken(member, "more than a header in member 1")
            yield Line(member, self.line_no, _parse_record(self.path, member, self.line_no, raw))
        if complete and result.version == 0:
            raise self.broken(member, "an empty first member")
        return complete


def scan(path: Path, handle: IO[bytes], result: "ScanResult") -> Iterator[Line]:
    """Stream the records of an open archive, member by member, in bounded memory.

    Yields each record with its member and (decompressed, ``zcat``) line number, and a
    ``Line(record=None)`` at the end of each complete member. A truncated last member is noted in
    ``result`` (its lines are yielded, without the closing marker). Raises ``NotAnArchiveError``
    (nothing of ours: checked on the first bytes and the first line, so a foreign file is not read
    further) or ``CorruptArchiveError``.
    """
    first = handle.read(len(_GZIP_MAGIC))
    if first != _GZIP_MAGIC:
        what = "empty" if not first else "not gzip"
        raise NotAnArchiveError(
            f"archive {path} is {what}, not an archive of cosmos_models; left untouched"
        )
    reader = _Reader(path, handle, first)
    member = 0
    while reader.fill():
        member += 1
        start = reader.offset
        complete = yield from reader.records(member, result)
        if not complete:
            if member == 1:
                raise reader.broken(member, "it ends inside its first member")
            result.truncated_member = member
            result.truncated_offset = start
            break
        yield Line(member, reader.line_no, None)
    result.end_offset = reader.offset


def read_records(path: Path) -> Iterator[Line]:
    """Every record of a complete archive at ``path``, streamed, for ``restore``.

    Raises ``FileNotFoundError`` if nothing is there, ``NotAnArchiveError``,
    ``CorruptArchiveError``, or ``TruncatedArchiveError`` (restore never repairs: the cut-off
    batch was never deleted, and a rerun of prune completes it).
    """
    info = check_regular_file(path)
    if info is None:
        raise FileNotFoundError(f"archive {path} does not exist")
    result = ScanResult()
    with _open_checked(path, info, "rb") as handle:
        held: list[Line] = []
        for line in scan(path, handle, result):
            # A member's records count only once the member is known to be whole.
            if line.record is None:
                yield from held
                held.clear()
            else:
                held.append(line)
    if result.truncated_member is not None:
        raise TruncatedArchiveError(
            f"archive {path} is truncated in member {result.truncated_member} (a prune was "
            f"interrupted while writing it); run prune with --archive {path} again to repair "
            "it, then restore"
        )


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _member(lines: Iterable[Record]) -> bytes:
    payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return gzip.compress(payload.encode("utf-8"), mtime=0)


class Archive:
    """An archive opened for ``prune``: ``append()`` adds one batch durably, never twice.

    Opening checks the path (see ``check_regular_file`` and ``scan``) and reads back the keys
    already archived; an existing archive must be ours, version 2, and not corrupt. A truncated
    last member (a killed prune) is cut off here, the only repair this package ever makes.
    Nothing is created until the first ``append``. Raises ``ArchiveError`` subclasses.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: set[Key] = set()
        self._counter = IdentityCounter()
        info = check_regular_file(path)
        self._exists = info is not None
        if info is None:
            return
        result = ScanResult()
        with _open_checked(path, info, "rb") as handle:
            # A member's rows count only once the member is known to be whole: the rows of a
            # truncated tail were never deleted, and prune archives them again below.
            held: list[Line] = []
            for line in scan(path, handle, result):
                if line.record is not None:
                    held.append(line)
                    continue
                for kept in held:
                    self.keys.add(self._key(kept))
                held.clear()
            if result.version != VERSION:
                raise NotAnArchiveError(
                    f"archive {path} is a version 1 archive (no header); restore can read it, "
                    "but prune only appends to version 2 archives: prune into a new file"
                )
        if result.truncated_offset is not None:
            # Opened for writing only now: checking a file never needs write access to it.
            with _open_checked(path, info, "rb+") as writable:
                writable.truncate(result.truncated_offset)
                writable.flush()
                os.fsync(writable.fileno())

    def _key(self, line: Line) -> Key:
        assert line.record is not None
        table = line.record["table"]
        try:
            return record_key(self._counter, line.record)
        except KeyError as exc:
            problem = f"field {exc} is missing"
        except (TypeError, ValueError) as exc:
            problem = str(exc)
        raise CorruptArchiveError(
            f"archive {self.path} is corrupt in member {line.member}, line {line.line}: "
            f"{table} row: {problem}"
        )

    def append(self, records: Iterable[Record]) -> int:
        """Write the records not archived yet as one gzip member, fsync'ed. Returns how many.

        Progress records of one run must all come in one call (prune deletes a run's progress
        with the run), so that repeated identical events are counted right; events numbered by
        ``seq`` (all since migration 0005) are keyed by it and may come in any calls. A context
        record is not written if its row is archived already, as a row or as context.
        """
        fresh = []
        # Counted among themselves, like the database's rows they are: the archive's own
        # count was taken when it was opened (``keys``).
        counter = IdentityCounter()
        for record in records:
            key = record_key(counter, record)
            if key not in self.keys and (not is_context(record) or key[1:] not in self.keys):
                fresh.append(record)
                self.keys.add(key)
        if not fresh:
            return 0
        if not self._exists:
            self._create()
        with self.path.open("ab") as handle:
            handle.write(_member(fresh))
            handle.flush()
            os.fsync(handle.fileno())
        return len(fresh)

    def _create(self) -> None:
        """Create the file with its header, all at once: a crash never leaves a headerless file.

        The header is written and fsync'ed under a temporary name, then hard-linked to the
        path (which fails if anything appeared there meanwhile, instead of replacing it).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        header = {"format": FORMAT, "version": VERSION, "created_at": datetime.now(UTC).isoformat()}
        try:
            with temporary.open("xb") as handle:
                handle.write(_member([header]))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, self.path)
            except FileExistsError:
                raise ArchiveError(
                    f"archive {self.path} appeared while prune was creating it; left untouched"
                ) from None
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_directory(self.path.parent)
        self._exists = True
