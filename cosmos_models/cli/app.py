"""The root of the ``cosmos-models`` command line: the Typer apps, shared options and output.

Every command module registers its commands on ``app`` (or ``db_app``); output helpers print
stored text literally (never as Rich markup) with control characters shown as escapes.
"""

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import exc as sa_exc

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.locations import get_database_url, parse_location, redact_url
from cosmos_models.models.types import utcnow

app = typer.Typer(
    name="cosmos-models",
    help="Inspect and maintain a cosmos_models database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Schema migrations and backups.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# No highlighting and no ":emoji:" codes: what the database holds is shown as it is.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
NOT_MIGRATED = "not migrated: run cosmos-models db upgrade"

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        help="File path, :memory: or URL "
        "(default: COSMOS_DATABASE_URL, then outputs/cosmos_workflow.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def describe(database: str | None) -> str:
    """The database's location for humans: password and secret query parameters masked."""
    return visible(redact_url(parse_location(database or get_database_url())))


# C0 and C1 control characters, DEL, and the Unicode format characters that reorder or hide
# text (bidi embeddings, overrides and isolates, zero-width marks): a terminal acts on them.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


# What json.dumps leaves raw inside strings although a terminal acts on it (it escapes C0).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``value`` as text whose control characters are shown as ``\\xNN``/``\\uNNNN`` escapes.

    ESC, BEL, CR, LF, TAB, backspace, C1 controls and bidi overrides reach the terminal as
    visible escapes, never as actions.
    """
    return _INVISIBLE.sub(_escape, str(value))


def literal(value: object) -> Text:
    """Stored text for a Rich table or line: never read as markup, control characters visible."""
    return Text(visible(value))


@contextmanager
def opened(database: str | None, *, read_only: bool = False) -> Iterator[DatabaseConnection]:
    """The database of one command (a ``DatabaseConnection``), closed afterwards.

    ``read_only`` never creates a file and opens SQLite read-only. Driver errors raised inside
    become one-line ``DatabaseError``s (no secret).
    """
    db = DatabaseConnection(database, read_only=read_only)
    try:
        yield db
    except sa_exc.DBAPIError as exc:
        raise db.translate_error(exc) from None
    finally:
        db.close()


def print_json(value: Any) -> None:
    """Print ``value`` as JSON (datetimes as ISO-8601), control characters as ``\\u`` escapes."""
    text = json.dumps(value, default=_json_default, ensure_ascii=False, indent=2)
    # json escapes C0 controls itself; C1 and bidi characters are valid raw JSON but would
    # reach the terminal, so they are written as the equivalent \u escapes.
    out.print(Text(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def when(value: datetime | None) -> str:
    """A timestamp for tables: UTC, to the second."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(start: datetime | None, end: datetime | None) -> str:
    """How long from ``start`` to ``end`` (or now), as H:MM:SS; ``-`` before a start."""
    if start is None:
        return "-"
    seconds = int(((end or utcnow()) - start).total_seconds())
    return str(timedelta(seconds=seconds))
