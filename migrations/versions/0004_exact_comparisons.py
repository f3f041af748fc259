"""Exact text comparisons on MariaDB: every text column of the three tables made binary, NO PAD.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-28

Tables created by 0001/0002 took the database's default collation, often case- and
accent-insensitive (utf8mb4_general_ci), and even utf8mb4_bin pads spaces: 'RS_ABC' found
'rs_abc', heartbeats of 'GPU-1' passed for 'gpu-1', and ids differing in case, accents or
trailing spaces collided. Each table is converted to utf8mb4_nopad_bin (MySQL 8, which lacks it,
gets utf8mb4_0900_bin, also binary and NO PAD), which becomes the tables' default too. JSON
columns are MariaDB LONGTEXT with a JSON_VALID check: CONVERT would change their collation, so
they are declared JSON again (utf8mb4_bin, the check kept). The foreign keys are dropped and added
back around the conversion (MariaDB cannot change the collation of a column a key joins). The downgrade converts back to the
database's default character set and collation, which is what 0001/0002 created; it fails,
changing nothing in that table, if ids differing only in case or trailing spaces exist by then.
Nothing to do on SQLite (BINARY) and PostgreSQL (deterministic collations): both are exact.
Frozen definitions: this file never imports the live models.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import Connection

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What downgrade() drops that may hold data (nothing: collations change, values stay): table ->
# None (the whole table) or the columns. `cosmos-models db downgrade` counts these rows.
DOWNGRADE_DROPS: dict[str, tuple[str, ...] | None] = {}

# Each table and its JSON columns (all NOT NULL).
TABLES: dict[str, tuple[str, ...]] = {
    "prompts": ("inputs", "parameters"),
    "runs": ("execution_config", "outputs", "metadata"),
    "progress": (),
}


def _is_mysql_family(connection: Connection) -> bool:
    return connection.dialect.name in ("mysql", "mariadb")


# The foreign keys between the tables, as 0001 named them: (table, name, column, referred table).
FOREIGN_KEYS = (
    ("runs", "fk_runs_prompt_id_prompts", "prompt_id", "prompts"),
    ("progress", "fk_progress_run_id_runs", "run_id", "runs"),
)


def _convert(connection: Connection, charset: str, collation: str) -> None:
    # MariaDB refuses to change the collation of a column a foreign key joins (error 1833, even
    # with foreign_key_checks off), so the keys are dropped, the tables converted, and the keys
    # added back; adding them checks every row again.
    for table, name, _, _ in FOREIGN_KEYS:
        op.drop_constraint(name, table, type_="foreignkey")
    for table, json_columns in TABLES.items():
        connection.exec_driver_sql(
            f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET {charset} COLLATE {collation}"
        )
        if json_columns:  # a statement of its own: within CONVERT's, CONVERT's collation wins
            modify = ", ".join(f"MODIFY `{column}` JSON NOT NULL" for column in json_columns)
            connection.exec_driver_sql(f"ALTER TABLE `{table}` {modify}")
    for table, name, column, referred in FOREIGN_KEYS:
        op.create_foreign_key(name, table, referred, [column], ["id"], ondelete="CASCADE")


def upgrade() -> None:
    connection = op.get_bind()
    if not _is_mysql_family(connection):
        return
    is_mariadb = getattr(connection.dialect, "is_mariadb", False)
    _convert(connection, "utf8mb4", "utf8mb4_nopad_bin" if is_mariadb else "utf8mb4_0900_bin")


def downgrade() -> None:
    connection = op.get_bind()
    if not _is_mysql_family(connection):
        return
    charset, collation = connection.exec_driver_sql(
        "SELECT default_character_set_name, default_collation_name "
        "FROM information_schema.schemata WHERE schema_name = DATABASE()"
    ).one()
    _convert(connection, charset, collation)
