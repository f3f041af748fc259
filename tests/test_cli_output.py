"""Stored text reaches the terminal literally: never as Rich markup, control characters visible."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmos_models import DatabaseConnection, RunStatus
from cosmos_models.cli.app import visible
from tests.factories import make_progress, make_prompt, make_run
from tests.test_cli import cli

MARKUP_ID = "rs_[link=https://evil.example]click[/link]"
PROMPT_TEXT = "city [/] at night \x1b[2J\x07"
# Everything a terminal acts on: ESC (CSI, OSC title), BEL, CR, backspace, C1 CSI, bidi override.
HOSTILE = "[bold red]x[/] :smile: \x1b]0;pwned\x07\r\x08\x9b\u202egnp.exe"
RAW_CONTROLS = ["\x1b", "\x07", "\r", "\x08", "\x9b", "\u202e"]


def _seed(path: Path) -> None:
    with DatabaseConnection(path) as db:
        db.create_tables()
        with db.get_session() as session:
            prompt = make_prompt(id="ps_[b]p[/b]", prompt_text=PROMPT_TEXT, model_type=HOSTILE)
            run = make_run(
                prompt,
                id=MARKUP_ID,
                status=RunStatus.RUNNING,
                worker_id=HOSTILE,
                error_message=HOSTILE,
                execution_config={"note": HOSTILE},
                outputs={"video": HOSTILE},
            )
            session.add_all([prompt, run])
            session.flush()
            session.add(make_progress(run, 40.0, stage=HOSTILE, message=HOSTILE))


@pytest.mark.parametrize(
    "argv",
    [
        ["prompts", "list"],
        ["runs", "list"],
        ["runs", "show", MARKUP_ID],
        ["watch", "--once"],
        ["stats"],
    ],
    ids=" ".join,
)
def test_hostile_stored_text_is_printed_literally(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostile.db"
    _seed(path)
    code, out, err = cli(capsys, *argv, "-d", str(path))
    assert (code, err) == (0, "")
    for raw in RAW_CONTROLS:
        assert raw not in out, f"{raw!r} reached the terminal"
    assert ":smile:" not in out or "😄" not in out
    assert "😄" not in out
    if argv == ["prompts", "list"]:
        assert "ps_[b]p[/b]" in out
        assert "city [/] at night \\x1b[2J\\x07" in out
    elif argv[0] in ("runs", "watch"):
        assert "[link=https://evil.example]click[/link]" in out  # the id, whole and literal
        # (a table may wrap the hostile text between the two halves)
        assert "[bold red]x" in out  # literal, not styled
        if argv[0] == "runs":  # watch cuts stages and messages to fit its columns
            assert "[bold red]x[/] :smile:" in out
            assert "\\x1b]0;pwned\\x07\\x0d\\x08\\x9b\\u202egnp.exe" in out


@pytest.mark.parametrize(
    "argv", [["prompts", "list"], ["runs", "list"], ["runs", "show", MARKUP_ID]], ids=" ".join
)
def test_json_output_round_trips_and_escapes_what_a_terminal_acts_on(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostile.db"
    _seed(path)
    code, out, _ = cli(capsys, *argv, "--json", "-d", str(path))
    assert code == 0
    for raw in RAW_CONTROLS:
        assert raw not in out
    payload = json.loads(out)
    text = json.dumps(payload, ensure_ascii=False)
    assert HOSTILE in text or json.dumps(HOSTILE, ensure_ascii=False)[1:-1] in text


def test_visible_escapes_controls_and_keeps_text() -> None:
    assert visible("a\x1bb") == "a\\x1bb"
    assert visible("\x07\r\n\t\x08\x7f\x85\x9f") == "\\x07\\x0d\\x0a\\x09\\x08\\x7f\\x85\\x9f"
    assert visible("\u202eabc\u2066\u200b\ufeff") == "\\u202eabc\\u2066\\u200b\\ufeff"
    for kept in ("plain", "naïve café", "東京", "[bold]x[/bold]", "C:\\path", "emoji 😄"):
        assert visible(kept) == kept


@settings(max_examples=60)
@given(st.text())
def test_visible_never_lets_a_control_character_through(value: str) -> None:
    import unicodedata

    shown = visible(value)
    for char in shown:
        assert unicodedata.category(char) != "Cc"
        assert char not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
