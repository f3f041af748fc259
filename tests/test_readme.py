"""The README's "Use from Python" example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block under {heading!r}"
    return blocks[0]


def test_use_from_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMOS_DATABASE_URL", str(tmp_path / "readme.db"))
    namespace: dict[str, object] = {}
    exec(compile(section_code("Use from Python"), "README.md", "exec"), namespace)
    from cosmos_models import DatabaseConnection, Run, RunStatus

    with DatabaseConnection(tmp_path / "readme.db") as db, db.get_session() as session:
        run = session.get(Run, namespace["run"].id)  # type: ignore[attr-defined]
        assert run is not None
        assert run.status is RunStatus.RUNNING
        assert run.outputs == {"video": "/outputs/city.mp4"}
        assert len(run.progress) == 1


def test_in_a_web_service_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'web.db'}")
    exec(compile(section_code("In a web service"), "README.md", "exec"), {})
