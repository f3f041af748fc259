"""Append-only, crash-safe JSON-lines archives (``.jsonl.gz``) of deleted rows.

Each batch is written as its own gzip member, flushed and fsync'ed before the rows are deleted.
A crash can therefore leave at most one incomplete member at the end of the file; opening the
archive again truncates it back to the last complete member, so a rerun appends cleanly and no
row is ever recorded twice (the keys already archived are read back first).
"""

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

Key = tuple[str, str]
Record = dict[str, Any]


def _complete_members_end(data: bytes) -> int:
    """The offset just past the last complete gzip member of ``data``."""
    offset = 0
    good = 0
    while offset < len(data):
        decompressor = zlib.decompressobj(wbits=31)
        try:
            decompressor.decompress(data[offset:])
        except zlib.error:
            break
        if not decompressor.eof:
            break
        offset = len(data) - len(decompressor.unused_data)
        good = offset
    return good


def _decode_members(data: bytes) -> Iterator[Record]:
    if not data:
        return
    for line in gzip.decompress(data).splitlines():
        if line.strip():
            yield json.loads(line)


class Archive:
    """An archive file: ``records()`` reads it, ``append()`` adds one batch durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: set[Key] = set()
        if path.exists():
            data = path.read_bytes()
            end = _complete_members_end(data)
            if end < len(data):
                # A batch whose writing was cut off: its rows were never deleted, drop it.
                with path.open("r+b") as handle:
                    handle.truncate(end)
                    handle.flush()
                    os.fsync(handle.fileno())
                data = data[:end]
            for record in _decode_members(data):
                self.keys.add(key_of(record))

    def records(self) -> Iterator[Record]:
        """Every record in the archive, in the order written."""
        if self.path.exists():
            yield from _decode_members(self.path.read_bytes())

    def append(self, records: Iterable[Record]) -> int:
        """Write the records not archived yet as one gzip member, durably. Returns how many."""
        fresh = [record for record in records if key_of(record) not in self.keys]
        if not fresh:
            return 0
        payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in fresh)
        member = gzip.compress(payload.encode("utf-8"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(member)
            handle.flush()
            os.fsync(handle.fileno())
        self.keys.update(key_of(record) for record in fresh)
        return len(fresh)


def key_of(record: Record) -> Key:
    """The identity of an archived row: its table and primary key."""
    return str(record["table"]), str(record["row"]["id"])
