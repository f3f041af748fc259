"""Alembic environment for cosmos_models.

The URL comes from an explicit ``sqlalchemy.url`` option, else from ``get_database_url()`` (the
same validation as the package). A caller may hand over a Connection or an Engine in
``config.attributes["connection"]``; ``cosmos_models.db.migrate`` does, after taking the migration
lock and the SQLite backup. Batch mode is on so SQLite can alter tables.

Run by the plain Alembic command line (``alembic -c alembic.ini upgrade head``, no connection
handed over), an upgrade or downgrade goes through ``cosmos_models.db.migrate`` like ``make
migrate``: the lock, the SQLite backup, the adoption of earlier databases, and a downgrade that
would drop data without a backup is refused. What it does is logged (alembic.ini's loggers).
"""

import logging
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, Engine

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.locations import get_database_url, parse_location
from cosmos_models.db.migrate import compare_type, include_object
from cosmos_models.db.revisions import VERSION_TABLE
from cosmos_models.errors import CosmosModelsError
from cosmos_models.models import progress, prompt, run  # noqa: F401 - put the tables on metadata
from cosmos_models.models.types import metadata

config = context.config
target_metadata = metadata
log = logging.getLogger("alembic.env")


# What every run needs, online or offline: the package's tables, batch mode for SQLite, and the
# package's own version table.
_COMMON = {
    "target_metadata": target_metadata,
    "render_as_batch": True,
    "version_table": VERSION_TABLE,
}


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        compare_type=compare_type,
        include_object=include_object,
        **_COMMON,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_database_url()
    # Offline mode writes SQL and never connects: the location is only validated and parsed.
    context.configure(url=parse_location(url), literal_binds=True, **_COMMON)
    with context.begin_transaction():
        context.run_migrations()


class InvalidLocation(CommandError, ValueError):
    """An invalid database location: one line from Alembic's CLI, a ``ValueError`` in Python."""


def _options() -> dict[str, Any]:
    """The options Alembic's command gave this environment (``fn``, ``destination_rev``...)."""
    environment: Any = getattr(context, "_proxy", None)
    return dict(getattr(environment, "context_opts", {}))


def _command() -> str | None:
    """``"upgrade"`` or ``"downgrade"`` when Alembic's command is one of them, else ``None``."""
    name = getattr(_options().get("fn"), "__name__", None)
    return name if name in ("upgrade", "downgrade") else None


def _through_the_package(direction: str) -> None:
    """Run the upgrade or downgrade as ``cosmos-models db`` does (lock, backup, adoption)."""
    from cosmos_models.db import migrate

    if config.config_file_name:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    location = config.get_main_option("sqlalchemy.url") or None
    revision = str(_options().get("destination_rev") or "head")
    # migrate runs Alembic again, which installs and then removes its own proxy globals on
    # alembic.context; put back ours, or Alembic fails when this command's context exits.
    saved = dict(vars(context))
    try:
        _migrate(migrate, direction, location, revision)
    finally:
        vars(context).update(saved)


def _migrate(migrate: Any, direction: str, location: str | None, revision: str) -> None:
    try:
        if direction == "downgrade":
            refusal = migrate.downgrade_refusal(location, revision, backup=True)
            if refusal is not None:
                raise CommandError(
                    f"{refusal}; refused: run cosmos-models db downgrade {revision} --yes"
                )
            migrate.downgrade(location, revision, report=log.info)
        else:
            migrate.upgrade(location, revision, report=log.info)
    except ValueError as exc:
        raise InvalidLocation(f"{direction} refused: {' '.join(str(exc).split())}") from None
    except CosmosModelsError as exc:
        raise CommandError(f"{direction} refused: {' '.join(str(exc).split())}") from None


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _configure(given)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            _configure(connection)
            connection.commit()
        return
    direction = _command()
    if direction is not None:
        _through_the_package(direction)
        return
    database = DatabaseConnection(config.get_main_option("sqlalchemy.url") or None)
    try:
        with database.engine.connect() as connection:
            _configure(connection)
            connection.commit()
    finally:
        database.close()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
