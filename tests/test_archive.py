"""The prune archive: durable batches, recovery from a cut-off write, no row recorded twice."""

import gzip
from pathlib import Path

from cosmos_models.archive import Archive


def record(table: str, row_id: object) -> dict[str, object]:
    return {"table": table, "row": {"id": row_id, "v": "é"}}


def test_append_skips_rows_already_archived(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    archive = Archive(path)
    assert archive.append([record("runs", "r1"), record("progress", 1)]) == 2
    assert archive.append([record("runs", "r1"), record("runs", "r2")]) == 1
    assert archive.append([]) == 0
    reopened = Archive(path)
    assert reopened.keys == {("runs", "r1"), ("progress", "1"), ("runs", "r2")}
    assert [r["row"]["id"] for r in reopened.records()] == ["r1", 1, "r2"]
    with gzip.open(path, "rt", encoding="utf-8") as handle:  # readable by standard tools
        assert len(handle.readlines()) == 3


def test_a_cut_off_batch_is_dropped_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    Archive(path).append([record("runs", "r1")])
    whole = path.read_bytes()
    partial = gzip.compress(b'{"table": "runs", "row": {"id": "r2"}}\n')[:-9]
    path.write_bytes(whole + partial)
    archive = Archive(path)
    assert path.read_bytes() == whole
    assert archive.keys == {("runs", "r1")}
    archive.append([record("runs", "r2")])
    assert [r["row"]["id"] for r in Archive(path).records()] == ["r1", "r2"]


def test_garbage_tail_is_dropped_too(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    Archive(path).append([record("runs", "r1")])
    whole = path.read_bytes()
    path.write_bytes(whole + b"\x1f\x8bnot really gzip")
    assert Archive(path).keys == {("runs", "r1")}
    assert path.read_bytes() == whole


def test_missing_archive_reads_empty(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "none.jsonl.gz")
    assert list(archive.records()) == []
    assert archive.keys == set()
