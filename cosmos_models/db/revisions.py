"""The shipped revisions and what a database records of them: scripts, head, targets, drops.

Migrations keep their own version table (``VERSION_TABLE``), not Alembic's default: an app that
keeps these tables in its database usually runs Alembic for its own tables too, and the two
histories must not collide.
"""

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from cosmos_models.errors import MigrationError

OUR_TABLES = frozenset({"prompts", "runs", "progress"})


# The package's own version table, not Alembic's default "alembic_version": an app that keeps
# these tables in its database usually runs Alembic for its own tables too, and the two
# histories must not collide (each would take the other's revision for an unknown one).
VERSION_TABLE = "cosmos_models_version"


def recorded_revision(connection: Connection) -> str | None:
    """The revision recorded in ``VERSION_TABLE`` (``None``: none recorded)."""
    options = {"version_table": VERSION_TABLE}
    return MigrationContext.configure(connection, opts=options).get_current_revision()


Report = Callable[[str], None]


def script_location() -> Path:
    """Where the migration scripts are: inside the installed package, else the checkout."""
    packaged = Path(str(files("cosmos_models"))) / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the package's scripts, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def scripts() -> ScriptDirectory:
    """The shipped revisions, read once per process (they do not change while it runs)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this version of the package knows."""
    head = scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise MigrationError("no migration scripts found")
    return head


def known_revisions() -> set[str]:
    """Every revision id shipped with this version of the package."""
    return {rev.revision for rev in scripts().walk_revisions()}


@dataclass
class DatabaseState:
    """What a database holds before a migration: revision, tables, earlier-implementation shape."""

    revision: str | None
    tables: set[str]

    @property
    def is_legacy(self) -> bool:
        """True for a database with cosmos tables but no migration history."""
        return self.revision is None and bool(self.tables & OUR_TABLES)


def database_state(connection: Connection) -> DatabaseState:
    tables = set(inspect(connection).get_table_names())
    revision = recorded_revision(connection)
    return DatabaseState(revision=revision, tables=tables)


def check_known(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise MigrationError(
            f"the database is at revision {revision!r}, which this version of cosmos_models "
            f"does not know (its newest is {head_revision()!r}); it may have been migrated by a "
            "newer version: upgrade cosmos_models instead. Nothing was changed."
        )


def check_target(revision: str) -> None:
    """Refuse an unknown target before anything (a lock file, a backup) is touched."""
    # Relative targets (-1, head-1, 0001+1) are resolved, and refused if bad, by Alembic.
    if revision in ("head", "heads", "base") or re.search(r"[+-]\d+$", revision):
        return
    try:
        script = scripts().get_revision(revision)
    except (CommandError, RevisionError):
        script = None
    if script is None:
        raise MigrationError(
            f"revision {revision!r} is not known (see: cosmos-models db history); "
            "nothing was changed"
        )


def target_revision(revision: str, direction: str) -> str | None:
    if direction == "upgrade" and revision == "head":
        return head_revision()
    return None  # relative or explicit targets are resolved by Alembic


# What each revision's downgrade drops: whole tables (None) or columns. A test checks that every
# shipped revision is listed here, so a new revision cannot forget to say what it takes away.
def downgrade_drops(revision: str) -> dict[str, tuple[str, ...] | None]:
    """What the downgrade of ``revision`` drops that may hold data, as its script declares it.

    Each revision script says it in ``DOWNGRADE_DROPS`` (table -> ``None`` for the whole table,
    else the columns), next to the ``downgrade()`` it describes.
    """
    script = scripts().get_revision(revision)
    if script is None:  # pragma: no cover - only shipped revisions are asked about
        raise MigrationError(f"unknown revision {revision!r}")
    drops: dict[str, tuple[str, ...] | None] = script.module.DOWNGRADE_DROPS
    return drops


def undone_revisions(current: str | None, target: str) -> list[str]:
    """The revisions a downgrade from ``current`` to ``target`` undoes, newest first."""
    chain = [script.revision for script in reversed(list(scripts().walk_revisions()))]
    at = chain.index(current) if current in chain else -1
    if target == "base":
        goal = -1
    elif target.startswith("-") and target[1:].isdigit():
        goal = at - int(target[1:])
    else:
        try:
            script = scripts().get_revision(target)
        except (CommandError, RevisionError):
            return []  # Alembic itself reports an unknown target when asked to go there
        goal = chain.index(script.revision) if script is not None else -1
    return list(reversed(chain[max(goal, -1) + 1 : at + 1]))
