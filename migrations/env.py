"""Alembic environment for cosmos_models.

The URL comes from an explicit ``sqlalchemy.url`` option, else from ``get_database_url()`` (the
same validation as the package). A caller may hand over a Connection or an Engine in
``config.attributes["connection"]``; ``cosmos_models.migrate`` does, after taking the migration
lock and the SQLite backup. Batch mode is on so SQLite can alter tables.
"""

from alembic import context
from sqlalchemy import Connection, Engine

from cosmos_models.connection import DatabaseConnection, get_database_url, parse_location
from cosmos_models.migrate import VERSION_TABLE, compare_type, include_object
from cosmos_models.types import metadata

config = context.config
target_metadata = metadata


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
