"""Least privilege on PostgreSQL and MariaDB: an owner, an app and a reader role, and their grants.

* ``<prefix>_owner`` owns the schema and runs migrations (and ``db maintain``, which creates
  partitions);
* ``<prefix>_app`` reads and writes rows (SELECT, INSERT, UPDATE, DELETE) and cannot change the
  schema: it owns nothing and may not create in the schema;
* ``<prefix>_reader`` may only SELECT (dashboards, replicas).

Tables added by later migrations are covered: on PostgreSQL by ``ALTER DEFAULT PRIVILEGES FOR ROLE
<owner>`` (the owner creates them), on MariaDB by database-level grants (``ON db.*``). Passwords
are never part of an error message: they are rendered only into the statements sent to the
server, or printed by ``role_sql`` when the caller asks for them explicitly (placeholders
otherwise).
"""

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, text

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.errors import CosmosModelsError, InvalidArgumentError
from cosmos_models.models.types import backend_family

KINDS: Final = ("owner", "app", "reader")
"""The three roles, in the order they are created."""

_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Backslashes mean different things under MariaDB's sql_modes, and control characters do not
# belong in a password typed anywhere: refused rather than escaped one way or another.
_BAD_PASSWORD = re.compile(r"[\\\x00-\x1f\x7f]")
# The package's tables, whose owner becomes the owner role on PostgreSQL (partitions too).
_PACKAGE_TABLES: Final = ("prompts", "runs", "progress", "cosmos_models_version")


@dataclass(frozen=True)
class RoleNames:
    """The names of the three roles made from one prefix."""

    owner: str
    app: str
    reader: str

    @classmethod
    def from_prefix(cls, prefix: str) -> "RoleNames":
        """``<prefix>_owner``, ``<prefix>_app``, ``<prefix>_reader``.

        Raises ``ValueError`` unless the prefix is 1-40 lower-case letters, digits or ``_``,
        beginning with a letter.
        """
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise InvalidArgumentError(
                f"prefix {prefix!r} must be 1-40 characters: a lower-case letter, then lower-case "
                "letters, digits or _"
            )
        return cls(owner=f"{prefix}_owner", app=f"{prefix}_app", reader=f"{prefix}_reader")

    def name(self, kind: str) -> str:
        """The role of ``kind`` (owner, app or reader)."""
        return str(getattr(self, kind))


def _family(db: DatabaseConnection) -> str:
    family = backend_family(db.engine.dialect)
    if family == "sqlite":
        raise CosmosModelsError(
            "roles exist on PostgreSQL and MariaDB; SQLite has none (protect the file with "
            "file permissions instead)"
        )
    return family


def _quote_password(kind: str, password: str) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidArgumentError(f"the {kind} password must be a non-empty string")
    if _BAD_PASSWORD.search(password):
        raise InvalidArgumentError(
            f"the {kind} password contains a backslash or a control character: choose another"
        )
    return "'" + password.replace("'", "''") + "'"


def _create_role(family: str, name: str, password: str, *, exists: bool) -> str:
    """CREATE (or ALTER, for a role that exists) with a quoted password or a placeholder."""
    verb = "ALTER" if exists else "CREATE"
    if family == "postgresql":
        return f'{verb} ROLE "{name}" LOGIN PASSWORD {password}'
    return f"{verb} USER '{name}'@'%' IDENTIFIED BY {password}"


def grant_statements(family: str, database: str, roles: RoleNames) -> list[str]:
    """The statements that give the three roles their privileges on ``database`` (re-runnable).

    Raises ``ValueError`` for a database name with a quote character.
    """
    if not database or any(quote in database for quote in "\"'`\\"):
        raise InvalidArgumentError(f"database name {database!r} is empty or contains a quote")
    owner, app, reader = roles.owner, roles.app, roles.reader
    if family == "mysql":
        return [
            f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{owner}'@'%'",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO '{app}'@'%'",
            f"GRANT SELECT ON `{database}`.* TO '{reader}'@'%'",
        ]
    tables = ", ".join(f"'{name}'" for name in _PACKAGE_TABLES)
    default = f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public GRANT'
    return [
        # PostgreSQL 15's default; older servers let every role create tables in public.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f'GRANT CONNECT ON DATABASE "{database}" TO "{owner}", "{app}", "{reader}"',
        f'GRANT USAGE, CREATE ON SCHEMA public TO "{owner}"',
        f'GRANT USAGE ON SCHEMA public TO "{app}", "{reader}"',
        # Tables made before the roles (by an administrator) pass to the owner, partitions of
        # progress included, so that it can migrate them and drop old partitions.
        "DO $$ DECLARE t regclass; BEGIN FOR t IN "
        f"SELECT c.oid::regclass FROM pg_class c WHERE c.relname IN ({tables}) "
        "AND c.relnamespace = 'public'::regnamespace UNION ALL "
        "SELECT i.inhrelid::regclass FROM pg_inherits i "
        "WHERE i.inhparent = to_regclass('public.progress') "
        f"LOOP EXECUTE format('ALTER TABLE %s OWNER TO %I', t, '{owner}'); END LOOP; END $$",
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{app}"',
        # UPDATE: restore moves the id sequence past the ids it put back (setval).
        f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "{app}"',
        f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{reader}"',
        f'{default} SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{app}"',
        f'{default} USAGE, SELECT, UPDATE ON SEQUENCES TO "{app}"',
        f'{default} SELECT ON TABLES TO "{reader}"',
    ]


def role_sql(
    db: DatabaseConnection, *, prefix: str = "cosmos", passwords: Mapping[str, str] | None = None
) -> list[str]:
    """The statements ``create_roles`` would run for a fresh server, without connecting.

    Passwords are the given ones when ``passwords`` names them, else placeholders
    (``:'<role>_password'``, a psql variable on PostgreSQL; on MariaDB a syntax error until
    edited). Raises ``CosmosModelsError`` on SQLite, ``ValueError`` for a bad prefix or password.
    """
    family = _family(db)
    roles = RoleNames.from_prefix(prefix)
    given = dict(passwords or {})
    statements = []
    for kind in KINDS:
        name = roles.name(kind)
        password = _quote_password(kind, given[kind]) if kind in given else f":'{name}_password'"
        statements.append(_create_role(family, name, password, exists=False))
    return statements + grant_statements(family, _database_name(db), roles)


def _database_name(db: DatabaseConnection) -> str:
    return str(db.url.database or "")


def _role_exists(connection: Connection, family: str, name: str) -> bool:
    query = (
        "SELECT 1 FROM pg_roles WHERE rolname = :name"
        if family == "postgresql"
        else "SELECT 1 FROM mysql.user WHERE User = :name AND Host = '%'"
    )
    return connection.execute(text(query), {"name": name}).first() is not None


@dataclass
class RolesResult:
    """What ``create_roles`` did: roles created and roles whose password changed, and the
    passwords it generated (for the new roles that were given none)."""

    roles: RoleNames
    created: list[str]
    password_changed: list[str]
    generated: dict[str, str]


def create_roles(
    db: DatabaseConnection,
    *,
    prefix: str = "cosmos",
    passwords: Mapping[str, str] | None = None,
) -> RolesResult:
    """Create the owner, app and reader roles (or update them) and grant their privileges.

    Re-runnable: an existing role keeps its password unless one is given; a new role without a
    given password gets a generated one (returned, never logged). ``db`` must connect as a role
    that may create roles and grant on the database (a superuser). Raises ``CosmosModelsError``
    on SQLite, ``ValueError`` for a bad prefix or password, ``DatabaseError`` from the server
    (the message names the statement's kind, never a password).
    """
    family = _family(db)
    roles = RoleNames.from_prefix(prefix)
    given = dict(passwords or {})
    for kind, password in given.items():
        if kind not in KINDS:
            raise InvalidArgumentError(f"password given for {kind!r}, which is not one of {KINDS}")
        _quote_password(kind, password)
    result = RolesResult(roles=roles, created=[], password_changed=[], generated={})
    with db.connect() as connection:
        raw = connection.execution_options(no_parameters=True)
        for kind in KINDS:
            name = roles.name(kind)
            try:
                exists = _role_exists(connection, family, name)
            except Exception as exc:
                orig = getattr(exc, "orig", exc)
                raise CosmosModelsError(
                    f"looking up role {name} failed (run db roles as a superuser): "
                    f"{type(orig).__name__}"
                ) from None
            if exists and kind not in given:
                continue
            if kind in given:
                password = given[kind]
            else:
                password = result.generated[kind] = secrets.token_urlsafe(24)
            statement = _create_role(family, name, _quote_password(kind, password), exists=exists)
            _run(raw, statement, f"{'altering' if exists else 'creating'} role {name}", secret=True)
            (result.password_changed if exists else result.created).append(name)
        for statement in grant_statements(family, _database_name(db), roles):
            _run(raw, statement, statement.split(" TO ")[0][:60])
        connection.commit()
    return result


def _run(connection: Connection, statement: str, what: str, *, secret: bool = False) -> None:
    """Run one statement; a failure says what was being done, never the statement's text.

    For a ``secret`` statement (one holding a password) not even the server's message is kept,
    since MariaDB quotes the statement near a syntax error: only the error's class and code.
    """
    try:
        connection.exec_driver_sql(statement)
    except Exception as exc:
        orig = getattr(exc, "orig", exc)
        if secret:
            code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig.args else "")
            detail = f"error code {code}"
        else:
            detail = (str(orig).strip().splitlines() or [""])[0]
        raise CosmosModelsError(f"{what} failed: {type(orig).__name__}: {detail}") from None
