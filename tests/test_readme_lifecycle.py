"""The README's worker loop and dashboard poll run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def lifecycle_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Lifecycle and workers") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_worker_loop_then_dashboard_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COSMOS_DATABASE_URL", str(tmp_path / "readme.db"))
    worker, dashboard, follower = lifecycle_examples()
    exec(compile(worker, "README worker", "exec"), {})
    exec(compile(dashboard, "README dashboard", "exec"), {})
    printed = capsys.readouterr().out
    assert "inference 100.0 step 3/3" in printed
    exec(compile(follower, "README follower", "exec"), {})
    followed = capsys.readouterr().out.splitlines()
    # The worker's run: its 4 events, seqs 1..4, in order.
    assert [line.split()[1:3] for line in followed] == [
        ["1", "uploading"],
        ["2", "inference"],
        ["3", "inference"],
        ["4", "inference"],
    ]
