"""Alembic environment of the example app: its tables only, its own version table.

Three settings keep the two histories apart: ``target_metadata`` is the app's metadata,
``version_table`` is the app's own (ours is ``cosmos_models_version``), and
``include_object=include_app_object`` leaves the package's tables out of autogenerate, so it
never proposes to drop (or change) them.
"""

from alembic import context
from reviews import metadata

from cosmos_models import DatabaseConnection, include_app_object

VERSION_TABLE = "app_reviews_version"

config = context.config
# DatabaseConnection: the same URL rules as the package, and SQLite's foreign keys turned on.
database = DatabaseConnection(config.get_main_option("sqlalchemy.url") or None)
try:
    with database.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            include_object=include_app_object,
            render_as_batch=True,  # SQLite alters tables by copying them
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
finally:
    database.close()
