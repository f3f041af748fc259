"""The prune archive format: a header first, streaming reads, foreign and damaged files refused."""

import gzip
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from cosmos_models.services.archive import (
    FORMAT,
    VERSION,
    Archive,
    ArchiveError,
    CorruptArchiveError,
    NotAnArchiveError,
    TruncatedArchiveError,
    _open_checked,
    read_records,
)
from cosmos_models.services.archive_keys import keys_of

TS = "2025-01-01T00:00:00+00:00"


def run_record(run_id: str) -> dict[str, object]:
    return {"table": "runs", "row": {"id": run_id, "v": "é"}}


def event(run_id: str, percentage: float, pid: int) -> dict[str, object]:
    row = {"id": pid, "run_id": run_id, "stage": "s", "percentage": percentage, "message": "m"}
    return {"table": "progress", "row": {**row, "timestamp": TS}}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ids(path: Path) -> list[object]:
    return [line.record["row"]["id"] for line in read_records(path) if line.record]


def read_all(path: Path) -> object:
    return list(read_records(path))


# What restore opens and what prune opens.
OPENERS = (read_all, Archive)


def three_members(path: Path) -> None:
    archive = Archive(path)
    for name in ("r1", "r2", "r3"):
        archive.append([run_record(name)])


def test_header_first_then_one_member_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    archive = Archive(path)
    assert not path.exists()  # nothing is created before there is something to keep
    assert archive.append([run_record("r1"), event("r1", 1.0, 1)]) == 2
    with gzip.open(path, "rt", encoding="utf-8") as handle:  # readable by standard tools
        lines = [json.loads(line) for line in handle]
    assert lines[0]["format"] == FORMAT
    assert lines[0]["version"] == VERSION
    assert [line.get("table") for line in lines[1:]] == ["runs", "progress"]
    assert [(line.member, line.line) for line in read_records(path)] == [(2, 2), (2, 3)]
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary header file is gone


def test_append_skips_rows_already_archived_counting_repeats(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    archive = Archive(path)
    # Two identical events of a run (different ids): both are rows, both are kept.
    assert archive.append([run_record("r1"), event("r1", 5.0, 1), event("r1", 5.0, 2)]) == 3
    assert archive.append([run_record("r1"), event("r1", 5.0, 7), event("r1", 5.0, 8)]) == 0
    # A third identical event (the run restored, one more event, pruned again) is new.
    batch = [event("r1", 5.0, 7), event("r1", 5.0, 8), event("r1", 5.0, 9)]
    assert Archive(path).append(batch) == 1
    assert archive.append([]) == 0
    assert ids(path) == ["r1", 1, 2, 9]
    assert len(Archive(path).keys) == 4


def test_progress_identity_ignores_ids_but_not_content() -> None:
    same = keys_of("progress", [event("r", 1.0, 1)["row"]])  # type: ignore[list-item]
    assert same == keys_of("progress", [event("r", 1.0, 99)["row"]])  # type: ignore[list-item]
    assert same != keys_of("progress", [event("r", 2.0, 1)["row"]])  # type: ignore[list-item]
    assert same != keys_of("progress", [event("r2", 1.0, 1)["row"]])  # type: ignore[list-item]


def test_truncated_tail_refused_by_restore_repaired_by_prune(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    three_members(path)
    whole = path.read_bytes()
    partial = gzip.compress(b'{"table": "runs", "row": {"id": "r4"}}\n')[:-9]
    path.write_bytes(whole + partial)
    before = digest(path)
    with pytest.raises(TruncatedArchiveError, match=r"truncated in member 5.*prune"):
        list(read_records(path))
    assert digest(path) == before
    archive = Archive(path)  # what prune opens: the cut-off batch is dropped
    assert path.read_bytes() == whole
    assert ("runs", "r4") not in archive.keys
    assert archive.append([run_record("r4")]) == 1
    assert ids(path) == ["r1", "r2", "r3", "r4"]


def test_flipped_byte_in_member_2_of_3_is_corrupt_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    archive = Archive(path)
    archive.append([run_record(f"r{i}") for i in range(50)])
    size_after_two = path.stat().st_size
    archive.append([run_record("last")])
    data = bytearray(path.read_bytes())
    data[size_after_two - 12] ^= 0x40  # inside member 2's deflate data, before its trailer
    path.write_bytes(bytes(data))
    before = digest(path)
    for action in OPENERS:
        with pytest.raises(CorruptArchiveError, match=r"member 2"):
            action(path)
        assert digest(path) == before


def test_garbage_after_the_last_member_is_corrupt_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    three_members(path)
    path.write_bytes(path.read_bytes() + b"\x1f\x8bnot really gzip")
    before = digest(path)
    with pytest.raises(CorruptArchiveError, match="member 5"):
        Archive(path)
    assert digest(path) == before


def member(lines: list[object], *, newline: bool = True) -> bytes:
    text = "".join(json.dumps(line) + ("\n" if newline else "") for line in lines)
    return gzip.compress(text.encode())


HEADER = {"format": FORMAT, "version": VERSION, "created_at": TS}


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        (member([{"table": "nope", "row": {}}]), r"member 2, line 2: field 'table': unknown"),
        (member([{"table": "runs", "row": []}]), r"member 2, line 2: field 'row' is not"),
        (member([{"table": "runs"}]), r"member 2, line 2: not a"),
        (gzip.compress(b"{not json\n"), r"member 2, line 2: not JSON"),
        (member([{"table": "runs", "row": {}}], newline=False), r"member 2 .*mid-line"),
        (
            member([{"table": "progress", "row": {"id": 1}}]),
            r"member 2, line 2: progress row: field 'run_id' is missing",
        ),
        (
            member([{"table": "progress", "row": {**event("r", 1, 1)["row"], "timestamp": 7}}]),  # type: ignore[dict-item]
            r"member 2, line 2: progress row: timestamp 7 is not a date",
        ),
        (
            member(
                [
                    {
                        "table": "progress",
                        "row": {**event("r", 1, 1)["row"], "timestamp": "2025-01-01T00:00:00"},
                    }
                ]
            ),  # type: ignore[dict-item]
            r"member 2, line 2: progress row: timestamp .* has no time zone",
        ),
    ],
)
def test_bad_records_are_corrupt_naming_member_and_line(
    tmp_path: Path, second: bytes, problem: str
) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(member([HEADER]) + second)
    before = digest(path)
    with pytest.raises(CorruptArchiveError, match=problem):
        Archive(path)
    assert digest(path) == before


def test_an_endless_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(member([HEADER]) + gzip.compress(b"x" * (65 * 2**20)))
    with pytest.raises(CorruptArchiveError, match="line too long"):
        list(read_records(path))


def foreign_files(tmp_path: Path) -> dict[str, Path]:
    database = tmp_path / "prod.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (x)")
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    empty = tmp_path / "empty.jsonl.gz"
    empty.touch()
    other_gzip = tmp_path / "logs.gz"
    other_gzip.write_bytes(gzip.compress(b"GET / 200\n" * 1000))
    old_version = tmp_path / "v9.jsonl.gz"
    old_version.write_bytes(member([{**HEADER, "version": 9}]))
    header_plus = tmp_path / "header_plus.jsonl.gz"
    header_plus.write_bytes(member([HEADER, {"table": "runs", "row": {"id": "x"}}]))
    cut_header = tmp_path / "cut_header.jsonl.gz"
    cut_header.write_bytes(member([HEADER])[:-6])
    link = tmp_path / "link.jsonl.gz"
    link.symlink_to(text)
    return {
        "sqlite": database,
        "text": text,
        "empty": empty,
        "other gzip": other_gzip,
        "version 9": old_version,
        "header and a row in member 1": header_plus,
        "cut header": cut_header,
        "symlink to text": link,
    }


def test_foreign_files_are_refused_untouched(tmp_path: Path) -> None:
    for what, path in foreign_files(tmp_path).items():
        before = digest(path)
        for action in OPENERS:
            with pytest.raises(NotAnArchiveError, match=str(path)):
                action(path)
            assert digest(path) == before, what


def test_non_regular_files_are_refused_before_any_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block: it must never be opened
    dangling = tmp_path / "dangling.jsonl.gz"
    dangling.symlink_to(tmp_path / "nowhere")
    device_link = tmp_path / "null.jsonl.gz"
    device_link.symlink_to("/dev/null")
    for path, kind in [
        (tmp_path, "a directory"),
        (fifo, "a FIFO"),
        (Path("/dev/null"), "a device"),
        (Path("/dev/full"), "a device"),
        (Path("/dev/zero"), "a device"),
        (device_link, "a device"),
        (dangling, "a symlink to nothing"),
    ]:
        for action in OPENERS:
            with pytest.raises(NotAnArchiveError, match=kind):
                action(path)
    assert not (tmp_path / "nowhere").exists()


def test_version_1_archives_are_read_but_not_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "v1.jsonl.gz"
    path.write_bytes(member([run_record("a"), run_record("b")]) + member([run_record("c")]))
    before = digest(path)
    assert ids(path) == ["a", "b", "c"]
    with pytest.raises(NotAnArchiveError, match="version 1"):
        Archive(path)
    assert digest(path) == before


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_records(tmp_path / "none.jsonl.gz"))
    assert Archive(tmp_path / "none.jsonl.gz").keys == set()


def test_a_path_that_appears_while_creating_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    archive = Archive(path)
    path.write_text("someone else's\n")
    with pytest.raises(ArchiveError, match="appeared"):
        archive.append([run_record("r1")])
    assert path.read_text() == "someone else's\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_zlib_errors_in_member_1_mean_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    data = bytearray(member([HEADER]))
    data[12] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(NotAnArchiveError, match="not an archive"):
        list(read_records(path))


def test_an_empty_first_member_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b"") + member([run_record("r")]))
    with pytest.raises(NotAnArchiveError, match="empty first member"):
        list(read_records(path))


def test_a_file_replaced_between_stat_and_open_is_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"x")
    second.write_bytes(b"y")
    with pytest.raises(NotAnArchiveError, match="changed while it was being opened"):
        _open_checked(second, os.stat(first), "rb")
