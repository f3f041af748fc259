"""The ``cosmos-models`` command line: migrate, inspect, watch live progress, prune with an archive.

Exit codes: 0 success, 1 error, 2 usage error; every error is one line on stderr beginning
``error:`` (no traceback, no secret). Every command takes ``--database`` (default:
``COSMOS_DATABASE_URL``, then ``outputs/cosmos_workflow.db``); listings take ``--json``. Commands
that only read open the database read-only and never create a file. Stored text is printed
literally (never as Rich markup), with control characters shown as escapes (see ``visible``).
"""

import sqlite3
import sys
from typing import NoReturn

import typer
from rich.text import Text
from sqlalchemy import exc as sa_exc
from typer._click import exceptions as click_exceptions

# Importing the command modules registers their commands on the root app.
from cosmos_models.cli import db, demo, maintenance, runs, serve, watch  # noqa: F401
from cosmos_models.cli.app import app, err, visible
from cosmos_models.errors import CosmosModelsError

# -- entry point ----------------------------------------------------------------------------


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
    err.print(Text(f"error: {visible(' '.join(message.split()))}"))
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exits 0 (ok), 1 (error) or 2 (usage), errors in one line."""
    try:
        # Not standalone: usage errors come back here, to be printed as one line (Typer's own
        # report is a multi-line box).
        code = app(args=argv, prog_name="cosmos-models", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        exc.show()  # the help text is what was asked for
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "cosmos-models"
        fail(f"{exc.format_message()} (see: {command} --help)", exc.exit_code)
    except typer.Abort:
        fail("aborted", 1)
    except (CosmosModelsError, ValueError, RuntimeError, OSError) as exc:
        fail(str(exc) or type(exc).__name__, 1)
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        # Should not happen (every way in translates driver errors); still one line, and the
        # location is not part of these messages.
        fail(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}", 1)
    sys.exit(code if isinstance(code, int) else 0)
