"""DatabaseConnection: where the database is, how to talk to it, and sessions that clean up.

One place decides, per backend, the engine options that make the spec's promises hold:

* SQLite files: foreign keys on for every pooled connection, WAL so readers never block the
  writer, a busy timeout, and ``BEGIN IMMEDIATE`` for sessions that may write (a deferred
  transaction that reads and then writes cannot wait for the lock: SQLite fails it at once
  with "database is locked"). Read-only sessions and plain engine connections begin deferred.
* ``:memory:``: a private SQLite file in WAL mode on a memory-backed filesystem (``/dev/shm``
  where there is one), removed on ``close()``, so sessions nest and readers see the committed
  state while a writer works, as on a file.
* PostgreSQL and MariaDB: configurable pool sizes, and no pre-ping round trip per checkout: a
  connection the server closed is found at checkout without one, and units of work retry once
  on a dead connection when nothing can have been committed (see ``recovery.py``).
* PostgreSQL read replicas: read-only sessions and connections are routed by
  ``cosmos_models.db.replicas``; a commit whose outcome is unknown raises ``CommitUnknownError``.
"""

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any, Final, TypedDict, TypeVar

from sqlalchemy import URL, Connection, Engine, create_engine
from sqlalchemy import exc as sa_exc
from sqlmodel import Session

from cosmos_models.db.lean import utc_sessions
from cosmos_models.db.locations import (
    MaskedURL,
    get_database_url,
    is_secret_parameter,
    parse_location,
    redact,
    redact_url,
)
from cosmos_models.db.migrator import migrate_database
from cosmos_models.db.readers import Readers
from cosmos_models.db.recovery import Unit, discard_closed_on_checkout, run_unit, unit_engine
from cosmos_models.db.replicas import ReadRoutingStats, ReplicaRouter, replica_locations, seconds
from cosmos_models.db.sqlite_files import (
    configure_sqlite_engine,
    on_read_only_file_system,
    sqlite_engine_url,
)
from cosmos_models.db.translate import (
    commit_or_unknown,
    describe_error,
    refuse_oversized_values,
    settled,
)
from cosmos_models.errors import DatabaseError, IntegrityViolation, InvalidArgumentError
from cosmos_models.models.checks import check_bool, check_int
from cosmos_models.models.values import dumps_json

# Where ``:memory:`` databases live when it exists and is writable (else the temp directory); only
# ever the parent of a private ``mkdtemp`` directory, so the shared location is safe.
MEMORY_FILESYSTEM: Final = Path("/dev/shm")  # noqa: S108

T = TypeVar("T")


class ConnectionOptions(TypedDict, total=False):
    """The keyword options of ``DatabaseConnection`` (``AsyncDatabase`` takes the same)."""

    pool_size: int
    max_overflow: int
    pool_recycle: int
    busy_timeout_ms: int
    sqlite_wal: bool
    read_only: bool
    echo: bool
    replicas: "Sequence[str | URL] | None"
    replica_wait: float
    replica_retry: float


class DatabaseConnection:
    """A database and its engine, with sessions that commit, roll back and close themselves.

    ``location`` is a file path, ``":memory:"`` or a SQLAlchemy URL (``sqlite:///…``,
    ``postgresql+psycopg://…``, ``mysql+pymysql://…``); ``None`` means ``get_database_url()``.
    ``sqlite_wal=False`` leaves a SQLite file's journal mode as it is (migrations use it, so that
    a refused or failed migration does not change a byte). ``read_only=True`` (or ``mode=ro`` in
    a SQLite location) never creates a file or directory and opens SQLite read-only, so a file
    on a read-only mount can be read. ``replicas`` (PostgreSQL only; default:
    ``COSMOS_DATABASE_REPLICA_URLS`` when ``location`` is ``None``) are streaming replicas that
    serve read-only sessions and connections (see ``cosmos_models.db.replicas``): a read waits up
    to ``replica_wait`` seconds for a replica to replay this connection's writes, else goes to
    the primary; a lagging or unreachable replica is skipped for ``replica_retry`` seconds.
    Raises ``ValueError`` for an invalid location or replica URL and ``DatabaseError`` when a
    read-only SQLite file does not exist.
    """

    def __init__(
        self,
        location: "str | PathLike[str] | URL | None" = None,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_recycle: int = 1800,
        busy_timeout_ms: int = 30_000,
        sqlite_wal: bool = True,
        read_only: bool = False,
        echo: bool = False,
        replicas: "Sequence[str | URL] | None" = None,
        replica_wait: float = 0.5,
        replica_retry: float = 5.0,
    ) -> None:
        check_int(pool_size, "pool_size", 1)
        check_int(max_overflow, "max_overflow", -1)  # -1: no limit, as SQLAlchemy reads it
        check_int(pool_recycle, "pool_recycle", -1)  # -1: never recycle
        check_int(busy_timeout_ms, "busy_timeout_ms", 0, 2**31 - 1)  # SQLite's int argument
        check_bool(sqlite_wal, "sqlite_wal")
        check_bool(echo, "echo")
        replica_wait = seconds(replica_wait, "replica_wait")
        replica_retry = seconds(replica_retry, "replica_retry")
        if location is None:
            self.url: URL = parse_location(get_database_url())
        else:
            try:
                self.url = parse_location(location)
            except ValueError as exc:
                raise InvalidArgumentError(f"location: {exc}") from None
        self.url = MaskedURL.of(self.url)  # its repr masks every secret, not just the password
        replica_urls = replica_locations(replicas, self.url, from_environment=location is None)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_memory = self.is_sqlite and not self.url.database
        self.path: Path | None = (
            Path(self.url.database or "") if self.is_sqlite and not self.is_memory else None
        )
        # A file on a read-only file system is opened read-only whatever was asked: writes then
        # fail with "read-only" instead of SQLite failing to create its -shm/-journal files.
        self.read_only = (
            read_only
            or (self.is_sqlite and self.url.query.get("mode") == "ro")
            or (self.path is not None and on_read_only_file_system(self.path))
        )
        if self.read_only and self.path is not None and not self.path.is_file():
            raise DatabaseError(f"database file {self.path} does not exist")
        self._closed = False
        self._replicas: ReplicaRouter | None = None
        # ``:memory:`` lives in a private directory (see _memory_url); removed on close or exit.
        self._memory_dir: Path | None = None
        self._remove_memory_dir: weakref.finalize[Any, Any] | None = None
        self._sqlite_wal = sqlite_wal
        # PostgreSQL and MariaDB engines (the primary's and each replica's) share these.
        self._server_options: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_recycle": pool_recycle,
            "echo": echo,
        }
        self.engine: Engine = self._create_engine(busy_timeout_ms=busy_timeout_ms, echo=echo)
        # Sessions may write, so on SQLite they take the write lock when they begin; read-only
        # sessions and plain engine connections begin deferred (SQLite's default).
        self.SessionLocal = _session_factory(self.engine.execution_options(cosmos_writer=True))
        self._read_session = _session_factory(self.engine)
        self._unit_engine = unit_engine(self.engine)
        if replica_urls:
            self._replicas = ReplicaRouter(
                self.engine,
                replica_urls,
                self._server_engine,
                wait=replica_wait,
                retry=replica_retry,
            )
        self.readers = Readers(self.engine, pool_recycle)  # lean reads' own connections

    # -- engine -------------------------------------------------------------------------------

    def _create_engine(self, *, busy_timeout_ms: int, echo: bool) -> Engine:
        if self.is_sqlite:
            return self._create_sqlite_engine(busy_timeout_ms=busy_timeout_ms, echo=echo)
        return self._server_engine(self.url)

    def _server_engine(self, url: URL) -> Engine:
        if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        # Secret query parameters reach the driver as connect arguments (what the dialect does
        # with them anyway), so that the engine's URL, shown in reprs and logs, holds none.
        secrets = {
            key: value[-1] if isinstance(value, tuple) else value
            for key, value in url.query.items()
            if is_secret_parameter(key)
        }
        engine = self._new_engine(
            url.difference_update_query(secrets),
            connect_args=secrets,
            json_serializer=dumps_json,
            **self._server_options,
        )
        utc_sessions(engine)  # the primary's and each replica's sessions
        discard_closed_on_checkout(engine)
        if engine.dialect.name == "mysql":
            refuse_oversized_values(engine)
        return engine

    def _create_sqlite_engine(self, *, busy_timeout_ms: int, echo: bool) -> Engine:
        options: dict[str, Any] = {
            "echo": echo,
            "json_serializer": dumps_json,
            "connect_args": {"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        }
        url = self.url
        if self.is_memory:
            url = self._memory_url()
        else:
            assert self.path is not None
            if not self.read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            url = sqlite_engine_url(self.path, self.url.query, read_only=self.read_only)
        engine = self._new_engine(url, **options)
        # The memory database always uses WAL: it is what lets readers work beside a writer.
        use_wal = (self._sqlite_wal or self.is_memory) and not self.read_only
        # Nothing survives the process anyway: no fsync for the memory database.
        synchronous = "OFF" if self.is_memory else "NORMAL"
        configure_sqlite_engine(
            engine,
            busy_timeout_ms=busy_timeout_ms,
            read_only=self.read_only,
            wal=use_wal,
            synchronous=synchronous,
        )
        return engine

    def _new_engine(self, url: URL, **options: Any) -> Engine:
        """Create the engine the options above were chosen for; the one hook a subclass may
        replace (``cosmos_models.aio`` builds an async engine and returns its sync facade, so
        the listeners above configure both sides)."""
        return create_engine(url, **options)

    def _memory_url(self) -> URL:
        """Create the private directory of a ``:memory:`` database; return its file's URL.

        SQLite's own memory databases cannot give each session its own transaction: a single
        connection serialises sessions, and ``memdb``/shared-cache readers wait on a writer's
        lock or read its uncommitted rows. A WAL file on a memory-backed filesystem behaves like
        any SQLite file at close to memory speed. The directory is mode 0700 (``mkdtemp``) and
        is removed, with the -wal and -shm files, by ``close()`` or at interpreter exit.
        """
        shm = MEMORY_FILESYSTEM
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
        self._memory_dir = Path(tempfile.mkdtemp(prefix="cosmos-memory-", dir=parent))
        self._remove_memory_dir = weakref.finalize(
            self, _remove_directory, self._memory_dir, os.getpid()
        )
        return URL.create("sqlite", database=str(self._memory_dir / "memory.db"))

    # -- sessions -----------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Bring the schema to the newest revision with Alembic (see ``cosmos_models.db.migrate``).

        Whatever the database held (nothing, an older revision, an earlier-implementation
        database), it ends at head with the revision recorded. Raises ``MigrationError``.
        """
        self._check_open()
        migrate_database(self, "head")

    @contextmanager
    def get_session(self, *, read_only: bool = False) -> Iterator[Session]:
        """Yield a session: commit on a clean exit, roll back on an exception, always close.

        ``read_only=True`` opens a deferred transaction on SQLite (readers then never wait for
        a writer) and reads from a replica when there are replicas. Raises
        ``RuntimeError("Connection is closed")`` after ``close()``, ``CommitUnknownError`` when
        the connection was lost during the commit, and ``DatabaseError``/``IntegrityViolation``
        for database errors (never with a password).
        """
        self._check_open()
        with self._read_connection(read_only) as replica:
            if replica is not None:
                session: Session = Session(bind=replica, expire_on_commit=False)
            else:
                session = (self._read_session if read_only else self.SessionLocal)()
            try:
                with settled(session, self.translate_error):
                    yield session
            finally:
                session.close()

    @contextmanager
    def _read_connection(self, read_only: bool) -> Iterator[Connection | None]:
        """A replica connection for a read when one is ready, else ``None`` (the primary)."""
        if not read_only or self._replicas is None:
            yield None
            return
        try:
            with self._replicas.read_connection() as connection:
                yield connection
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            raise self.translate_error(exc) from None

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[Connection]:
        """Yield a Core connection (no transaction begun; the caller commits), then close it.

        Without ``read_only`` a SQLite transaction begun on it takes the write lock at once;
        with it, a replica serves it when there are replicas. Raises what ``get_session``
        raises: ``RuntimeError`` when closed, ``DatabaseError`` (one line, no secret, with a
        hint) for driver and connection errors.
        """
        self._check_open()
        with self._read_connection(read_only) as replica:
            if replica is not None:
                yield replica
                return
            try:
                with self.engine.connect() as connection:
                    if not read_only:
                        connection.execution_options(cosmos_writer=True)
                    yield connection
            except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
                raise self.translate_error(exc) from None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """Yield a Core connection in a write transaction: commit on a clean exit, else roll back.

        Raises like ``connect``, and ``CommitUnknownError`` when the connection was lost during
        the commit.
        """
        with self.connect() as connection:
            transaction = connection.begin()
            try:
                yield connection
            except BaseException:
                transaction.rollback()
                raise
            commit_or_unknown(transaction, self.translate_error)

    def read_routing_stats(self) -> ReadRoutingStats:
        """Where reads went (replicas, primary, replicas skipped); all zero without replicas."""
        return ReadRoutingStats() if self._replicas is None else self._replicas.stats()

    def run_unit(self, work: Callable[[Unit], T], *, read_committed: bool = False) -> T:
        """Run ``work`` as one lean unit (one statement per round trip; see ``recovery.py``).

        On PostgreSQL in autocommit (``work`` sends at most one write, last), elsewhere in one
        transaction (SQLite: ``BEGIN IMMEDIATE``); retried once on a dead connection when nothing
        can have been committed. ``read_committed`` sets that isolation on MariaDB. Raises what
        ``get_session`` raises.
        """
        self._check_open()
        try:
            return run_unit(
                self._unit_engine, work, self.translate_error, read_committed=read_committed
            )
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            raise self.translate_error(exc) from None

    def translate_error(self, exc: BaseException) -> DatabaseError:
        """Turn a driver error into a one-line ``DatabaseError`` with a hint and no secret."""
        original = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
        if isinstance(exc, sa_exc.IntegrityError):
            first_line = (str(original).strip().splitlines() or [""])[0]
            return IntegrityViolation(self._redact(f"{type(original).__name__}: {first_line}"))
        where = str(self.path) if self.path is not None else redact_url(self.url)
        return DatabaseError(self._redact(describe_error(original, where)))

    def _redact(self, text: str) -> str:
        text = redact(text, self.url)
        return text if self._replicas is None else self._replicas.redact(text)

    @property
    def routes_reads(self) -> bool:
        """True when read-only work goes through the replica router (replicas were given)."""
        return self._replicas is not None

    @property
    def sqlite_wal(self) -> bool:
        """Whether a SQLite file is put in WAL mode (migrations open one that is not)."""
        return self._sqlite_wal

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Connection is closed")

    def close(self) -> None:
        """Release every pooled connection; later ``get_session()`` calls raise ``RuntimeError``."""
        if not self._closed:
            self._closed = True
            self.readers.close()
            self.engine.dispose()
            if self._replicas is not None:
                self._replicas.dispose()
            if self._remove_memory_dir is not None:
                self._remove_memory_dir()

    def __enter__(self) -> "DatabaseConnection":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"DatabaseConnection({redact_url(self.url)!r}, {state})"

    __str__ = __repr__


def _remove_directory(path: Path, owner_pid: int) -> None:
    """Remove ``path`` and what it holds, in the process that made it only.

    A forked child inherits the finalizer and the object; its exit or garbage collection must
    not delete the parent's live database.
    """
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


def _session_factory(bind: Engine) -> Any:
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(bind=bind, class_=Session, expire_on_commit=False)


def init_database(database_url: "str | PathLike[str] | URL | None" = None) -> DatabaseConnection:
    """Open the database (default: ``get_database_url()``) and bring its schema up to date.

    Raises ``ValueError`` naming ``database_url`` for an invalid location and ``DatabaseError``
    if it cannot be reached.
    """
    try:
        connection = DatabaseConnection(database_url)
    except ValueError as exc:
        raise InvalidArgumentError(f"database_url: {str(exc).removeprefix('location: ')}") from None
    try:
        connection.create_tables()
    except BaseException:
        connection.close()
        raise
    return connection
