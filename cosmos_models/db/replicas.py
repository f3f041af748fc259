"""Read routing to PostgreSQL streaming replicas, with read-your-writes and health tracking.

Reads go to a replica once it has replayed past the *floor*: the primary's WAL insert position
taken after each commit on the primary through this connection (read-your-writes), raised by
every replica position a read has seen (so reads never go back in time when they move between
replicas). A replica that
has not reached the floor within ``wait`` seconds is lagging, one that cannot be reached is down;
either is skipped for ``retry`` seconds (reads go to the next replica or the primary), then
tried again. Nothing here runs unless replicas are configured: writes on a connection without
replicas cost no extra round trip.
"""

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.util.concurrency import await_, in_greenlet

from cosmos_models.db.locations import get_replica_urls, parse_location, redact, redact_url
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.checks import check_seconds

# Where the server is in the WAL, as bytes: the primary's insert position (at or past the end of
# every commit it acknowledged), a standby's replay position (what its snapshots can see). An
# insert position at a page boundary points past the page header (24 bytes; 40 at a segment's
# start) that no record has filled yet, where a standby's replay stops at the boundary itself:
# both are read as the boundary, else a read after such a write would wait for the next one.
_POSITION: Final = """
SELECT at - CASE
    WHEN mod(at, pg_size_bytes(current_setting('wal_segment_size'))) = 40 THEN 40
    WHEN mod(at, current_setting('wal_block_size')::int) = 24 THEN 24
    ELSE 0 END
FROM (SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
               ELSE pg_current_wal_insert_lsn() END) - '0/0'::pg_lsn AS at) AS position
"""

# Between two looks at a replica that has not caught up yet.
_POLL_SECONDS: Final = 0.005


def pause(duration: float) -> None:
    """Wait ``duration`` seconds; on the async side (SQLAlchemy's greenlet bridge, where
    ``cosmos_models.aio`` runs this code) the event loop keeps running meanwhile."""
    if in_greenlet():
        await_(asyncio.sleep(duration))
    else:
        time.sleep(duration)


def seconds(value: Any, name: str) -> float:
    """A finite number of seconds ≥ 0; ``ValueError`` naming ``name`` else."""
    checked = check_seconds(value, name, allow_zero=True)
    if checked is None:
        raise InvalidArgumentError(f"{name}: must be a finite number of seconds, got None")
    return checked


def replica_locations(
    given: "Sequence[str | URL] | None", primary: URL, *, from_environment: bool
) -> list[URL]:
    """The replica URLs (``given``, else ``COSMOS_DATABASE_REPLICA_URLS`` when
    ``from_environment``), each checked like the primary's.

    Raises ``ValueError`` naming the bad entry (never its password), or saying that replicas
    need PostgreSQL when the primary or a replica is another backend.
    """
    if given is None:
        given = get_replica_urls() if from_environment else []
    if isinstance(given, str | bytes | URL) or not isinstance(given, Sequence):
        raise InvalidArgumentError(f"replicas: must be a list of URLs, got {type(given).__name__}")
    urls = []
    for index, location in enumerate(given):
        try:
            url = parse_location(location)
        except ValueError as exc:
            raise InvalidArgumentError(f"replicas[{index}]: {exc}") from None
        for which, backend in (("primary", primary), (f"replicas[{index}]", url)):
            if backend.get_backend_name() != "postgresql":
                raise InvalidArgumentError(
                    f"replicas: read replicas need PostgreSQL; the {which} is "
                    f"{backend.get_backend_name()}"
                )
        urls.append(url)
    return urls


@dataclass(frozen=True)
class ReadRoutingStats:
    """Where reads went since the connection opened, for monitoring.

    ``replicas`` maps each replica (its URL, password masked) to the reads it served;
    ``primary`` counts reads served by the primary (every replica skipped); ``lagging`` and
    ``unavailable`` count replicas skipped for a read because they had not replayed this
    connection's writes in time, or could not be reached.
    """

    primary: int = 0
    replicas: dict[str, int] = field(default_factory=dict)
    lagging: int = 0
    unavailable: int = 0


_COMMITTED: Final = "cosmos_committed"


def _mark_committed(connection: Connection) -> None:
    """Engine ``commit`` event: this pooled connection has committed since its checkout."""
    connection.info[_COMMITTED] = True


class _Replica:
    """One replica: its engine, the highest position seen, and when to try it again."""

    def __init__(self, url: URL, engine: Engine) -> None:
        self.url = url
        self.name = redact_url(url)
        self.engine = engine
        self.skip_until = 0.0


def _position(connection: Connection) -> int | None:
    """The server's WAL position in bytes (None on a standby that has replayed nothing)."""
    value = connection.exec_driver_sql(_POSITION).scalar()
    return None if value is None else int(value)


class ReplicaRouter:
    """Chooses where each read goes; counts where reads went. Thread-safe.

    ``primary`` is the primary's engine: each of its connections that committed takes the WAL
    position when it returns to the pool (one round trip, in the committing thread, before
    ``get_session`` or ``connect`` returns). ``make_engine`` builds an engine for a replica URL
    (the primary's options). ``wait`` is how long a read waits for a replica to replay this
    connection's writes, ``retry`` how long a lagging or unreachable replica is skipped.
    """

    def __init__(
        self,
        primary: Engine,
        urls: Sequence[URL],
        make_engine: Callable[[URL], Engine],
        *,
        wait: float,
        retry: float,
    ) -> None:
        self.primary = primary
        self.replicas = [_Replica(url, make_engine(url)) for url in urls]
        self.wait = wait
        self.retry = retry
        self._lock = threading.Lock()
        self._floor = 0
        # Commits whose position could not be taken: reads use the primary until one is.
        self._unknown = 0
        self._turn = itertools.count()
        self._served = {replica.name: 0 for replica in self.replicas}
        self._primary = 0
        self._lagging = 0
        self._unavailable = 0
        event.listen(primary, "commit", _mark_committed)
        event.listen(primary.pool, "checkin", self._note_commit)

    def redact(self, text: str) -> str:
        """``text`` with every replica URL's secrets masked."""
        for replica in self.replicas:
            text = redact(text, replica.url)
        return text

    def _raise_floor(self, position: int) -> None:
        with self._lock:
            self._floor = max(self._floor, position)

    def _note_commit(self, dbapi_connection: Any, record: Any) -> None:
        """Pool check-in: take the position after a commit, so later reads see that write.

        Read-only transactions on the primary commit too: what they saw is then never missing
        from a later replica read. Never raises (the commit is done whatever happens here): when
        the position cannot be taken, reads go to the primary until it can be.
        """
        if not record.info.pop(_COMMITTED, False):
            return
        try:
            if dbapi_connection is None:  # invalidated since its commit: it cannot be asked
                raise ConnectionError("connection invalidated")
            # Autocommit for this one statement (a client-side switch): no transaction to end.
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            try:
                cursor = dbapi_connection.cursor()
                cursor.execute(_POSITION)
                position = cursor.fetchone()[0]
                cursor.close()
            finally:
                dbapi_connection.autocommit = autocommit
        except Exception:
            with self._lock:
                self._unknown += 1
            return
        self._raise_floor(int(position))

    def _known_floor(self) -> int | None:
        """The floor, or None when a write's position is still unknown and cannot be had."""
        with self._lock:
            unknown, floor = self._unknown, self._floor
        if not unknown:
            return floor
        try:
            with self.primary.connect() as connection:
                position = _position(connection) or 0
        except sa_exc.DBAPIError:
            return None
        with self._lock:
            self._floor = max(self._floor, position)
            if self._unknown != unknown:  # another commit went unmeasured meanwhile
                return None
            self._unknown = 0
            return self._floor

    def _candidates(self) -> list[_Replica]:
        """Replicas not being skipped, starting with the next in turn (round robin)."""
        now = time.monotonic()
        start = next(self._turn)
        count = len(self.replicas)
        ordered = [self.replicas[(start + i) % count] for i in range(count)]
        return [replica for replica in ordered if replica.skip_until <= now]

    def _skip(self, replica: _Replica, *, down: bool) -> None:
        with self._lock:
            replica.skip_until = time.monotonic() + self.retry
            if down:
                self._unavailable += 1
            else:
                self._lagging += 1

    def _caught_up(self, connection: Connection, floor: int, deadline: float) -> bool:
        """Wait until the replica on ``connection`` has replayed ``floor``, or the deadline."""
        while True:
            position = _position(connection)
            if position is not None and position >= floor:
                self._raise_floor(position)
                return True
            if time.monotonic() >= deadline:
                return False
            pause(_POLL_SECONDS)

    @contextmanager
    def read_connection(self) -> Iterator[Connection | None]:
        """Yield a connection to a replica that has replayed this connection's writes, not in
        a transaction, or ``None``: read from the primary. Never raises for a replica that is
        down or lagging (it is skipped); errors of the read itself propagate."""
        floor = self._known_floor()
        chosen: Connection | None = None
        if floor is not None:
            deadline = time.monotonic() + self.wait
            for replica in self._candidates():
                try:
                    connection = replica.engine.connect()
                except sa_exc.DBAPIError:
                    self._skip(replica, down=True)
                    continue
                try:
                    # The check runs outside a transaction (one round trip; ending SQLAlchemy's
                    # autocommit "transaction" sends nothing), so the read's snapshot, taken by
                    # its first statement, comes after it.
                    connection.execution_options(isolation_level="AUTOCOMMIT")
                    ready = self._caught_up(connection, floor, deadline)
                    connection.rollback()
                    connection.execution_options(isolation_level=connection.default_isolation_level)
                except sa_exc.DBAPIError:
                    connection.invalidate()
                    connection.close()
                    self._skip(replica, down=True)
                    continue
                if ready:
                    chosen = connection
                    with self._lock:
                        self._served[replica.name] += 1
                    break
                connection.close()
                self._skip(replica, down=False)
        if chosen is None:
            with self._lock:
                self._primary += 1
            yield None
            return
        with chosen:
            yield chosen

    def stats(self) -> ReadRoutingStats:
        """A snapshot of the counters."""
        with self._lock:
            return ReadRoutingStats(
                primary=self._primary,
                replicas=dict(self._served),
                lagging=self._lagging,
                unavailable=self._unavailable,
            )

    def dispose(self) -> None:
        """Close every pooled replica connection."""
        for replica in self.replicas:
            replica.engine.dispose()
