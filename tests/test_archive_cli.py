"""prune --archive and restore on the command line: anything but our archive is refused untouched.

Every case: exit code 1, one line on stderr naming the path, no traceback, the file byte-identical
(sha256), the database's rows unchanged.
"""

import gzip
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from cosmos_models import DatabaseConnection
from cosmos_models.services.archive import Archive
from tests.test_cli import cli, seed
from tests.test_maintenance import counts


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def sqlite_database(tmp_path: Path) -> Path:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
        connection.execute("INSERT INTO users VALUES ('root')")
    return path


def passwd(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    shutil.copyfile("/etc/passwd", path)
    return path


def notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    return path


def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.jsonl.gz"
    path.touch()
    return path


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def symlink_to_text(tmp_path: Path) -> Path:
    path = tmp_path / "link.jsonl.gz"
    path.symlink_to(notes(tmp_path))
    return path


def flipped_member_2_of_3(tmp_path: Path) -> Path:
    path = tmp_path / "flipped.jsonl.gz"
    archive = Archive(path)
    archive.append([{"table": "runs", "row": {"id": f"r{i}"}} for i in range(40)])
    end_of_2 = path.stat().st_size
    archive.append([{"table": "runs", "row": {"id": "r99"}}])
    data = bytearray(path.read_bytes())
    data[end_of_2 - 12] ^= 0x01
    path.write_bytes(bytes(data))
    return path


FOREIGN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "sqlite database": (sqlite_database, "not gzip"),
    "passwd copy": (passwd, "not gzip"),
    "text file": (notes, "not gzip"),
    "empty file": (empty, "empty"),
    "directory": (lambda tmp: tmp, "a directory"),
    "fifo": (fifo, "a FIFO"),
    "/dev/null": (lambda _: Path("/dev/null"), "a device"),
    "/dev/full": (lambda _: Path("/dev/full"), "a device"),
    "symlink to text": (symlink_to_text, "not gzip"),
    "flipped byte in member 2 of 3": (flipped_member_2_of_3, "corrupt in member 2"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
@pytest.mark.parametrize("command", ["restore", "prune"])
def test_foreign_paths_are_refused_untouched(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "db" / "prod.db"
    database.parent.mkdir()
    url = str(database)
    seed(url)
    make, problem = FOREIGN[case]
    path = make(tmp_path)
    before = digest(path)
    with DatabaseConnection(url) as db:
        rows = counts(db)
    args = (
        ["restore", str(path)]
        if command == "restore"
        else ["prune", "--older-than", "1d", "--archive", str(path)]
    )
    code, out, err = cli(capsys, *args, "-d", url)
    assert code == 1
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert str(path) in err
    assert problem in err
    assert "Traceback" not in out + err
    assert digest(path) == before
    with DatabaseConnection(url) as db:
        assert counts(db) == rows


@pytest.mark.parametrize("command", ["restore", "prune"])
def test_the_database_file_itself_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cosmos-models restore prod.db`: it cut prod.db to 0 bytes; now nothing changes."""
    database = tmp_path / "prod.db"
    seed(str(database))
    before = digest(database)
    args = (
        ["restore", str(database)]
        if command == "restore"
        else ["prune", "--older-than", "1d", "--archive", str(database)]
    )
    code, _, err = cli(capsys, *args, "-d", str(database))
    assert code == 1
    assert f"archive {database} is not gzip" in err
    assert digest(database) == before


def test_truncated_tail_restore_refuses_prune_repairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "prod.db")
    seed(url)
    archive = tmp_path / "a.jsonl.gz"
    assert cli(capsys, "prune", "--older-than", "30d", "--archive", str(archive), "-d", url)[0] == 0
    whole = archive.read_bytes()
    tail = gzip.compress(b'{"table": "runs", "row": {"id": "rs_cut"}}\n')[:-5]
    archive.write_bytes(whole + tail)
    before = digest(archive)
    code, _, err = cli(capsys, "restore", str(archive), "-d", url)
    assert code == 1
    assert "truncated in member 3" in err
    assert digest(archive) == before
    code, out, _ = cli(capsys, "prune", "--older-than", "30d", "--archive", str(archive), "-d", url)
    assert code == 0
    assert "deleted 0 runs" in out
    assert archive.read_bytes() == whole  # the cut-off member is gone, nothing else changed
    code, out, _ = cli(capsys, "restore", str(archive), "-d", url)
    assert code == 0
    assert "restored 0 prompts, 1 runs, 1 progress; 1 rows were already present" in out
    code, out, _ = cli(capsys, "restore", str(archive), "-d", url)
    assert "restored 0 prompts, 0 runs, 0 progress; 3 rows were already present" in out


def test_prune_creates_a_missing_archive_only_when_it_has_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "prod.db")
    seed(url)
    archive = tmp_path / "new" / "a.jsonl.gz"
    code, _, _ = cli(capsys, "prune", "--older-than", "3650d", "--archive", str(archive), "-d", url)
    assert code == 0
    assert not archive.exists()
    assert cli(capsys, "prune", "--older-than", "30d", "--archive", str(archive), "-d", url)[0] == 0
    with gzip.open(archive, "rt") as handle:
        assert handle.readline().startswith('{"format": "cosmos_models.archive", "version": 2')
