"""A private PostgreSQL primary and streaming replica in a temp directory, for replica tests.

Hermetic on purpose: the shared server at 127.0.0.1:5432 is never touched (no ``pg_hba.conf``
edit, no reload, no restart), and the failover test may stop and promote freely. ``initdb``
makes the primary (its own ``postgresql.conf`` and ``pg_hba.conf``, trust on 127.0.0.1 only,
replication included), ``pg_basebackup -R -X stream`` the replica; both listen on free ports
and keep their sockets in the temp directory. As root the binaries run as the ``postgres`` OS
user (``runuser``), since PostgreSQL refuses to run as root; otherwise as the current user.
``destroy()`` stops both with ``-m immediate`` and removes the directory (also at exit).
"""

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

PRIMARY = "primary"
REPLICA = "replica"


def _binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb, else the one on PATH, else None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def cluster_unavailable() -> str | None:
    """None if a private cluster can be made here, else why not (for a skip or a CI failure)."""
    binaries = _binaries()
    if binaries is None:
        return "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found"
    for name in ("initdb", "pg_ctl", "pg_basebackup"):
        if not (binaries / name).is_file():
            return f"{binaries / name} not found"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "runuser not found (needed to run PostgreSQL as the postgres user)"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no 'postgres' OS user to run PostgreSQL as (running as root)"
        where = tempfile.gettempdir()
        enter = ["runuser", "-u", "postgres", "--", "test", "-x", where]
        if subprocess.run(enter, check=False, timeout=30).returncode != 0:
            return f"the postgres OS user cannot enter the temp directory {where} (set TMPDIR)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgCluster:
    """A primary and one streaming replica; ``synchronous=True`` makes commits wait for it."""

    def __init__(self, *, synchronous: bool = False) -> None:
        reason = cluster_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        self.bin = _binaries() or Path()
        self.synchronous = synchronous
        self.dir = Path(tempfile.mkdtemp(prefix="cosmos-pgcluster-"))
        self.ports = {PRIMARY: free_port(), REPLICA: free_port()}
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chmod(self.dir, 0o700)
        self._destroyed = False
        atexit.register(self.destroy)
        try:
            self._make_primary()
            self._make_replica()
        except BaseException:
            self.destroy()
            raise

    # -- set-up ---------------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr.strip() or result.stdout}")
        return result

    def data(self, node: str) -> Path:
        """The data directory of ``node`` (``"primary"`` or ``"replica"``)."""
        return self.dir / node

    def _configure(self, node: str, extra: dict[str, str]) -> None:
        settings = {
            "port": str(self.ports[node]),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.dir}'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "wal_keep_size": "'64MB'",
            "hot_standby": "on",
            "max_connections": "60",
            "shared_buffers": "'16MB'",
            # Throw-away data: a process crash (-m immediate) keeps the OS cache, and the OS
            # itself is not crashed by these tests, so fsync buys nothing here.
            "fsync": "off",
            "wal_receiver_status_interval": "1s",
            **extra,
        }
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data(node) / "postgresql.conf").open("a") as conf:
            conf.write("\n# cosmos_models test cluster\n" + lines)
        (self.data(node) / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "local replication all trust\n"
            "host replication all 127.0.0.1/32 trust\n"
        )

    def _make_primary(self) -> None:
        self._run(
            "initdb", "-D", str(self.data(PRIMARY)), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        standby_names = "'*'" if self.synchronous else "''"
        self._configure(PRIMARY, {"synchronous_standby_names": standby_names})
        self.start(PRIMARY)

    def _make_replica(self) -> None:
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports[PRIMARY]), "-U", "postgres",
            "-D", str(self.data(REPLICA)), "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip
        # Once promoted it must not wait for a standby of its own.
        self._configure(REPLICA, {"synchronous_standby_names": "''"})
        self.start(REPLICA)

    # -- control --------------------------------------------------------------------------------

    def start(self, node: str) -> None:
        """Start ``node`` and wait until it accepts connections."""
        data = self.data(node)
        self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / f"{node}.log"), "-w", "start")

    def stop(self, node: str, mode: str = "immediate") -> None:
        """Stop ``node`` (``-m immediate``: a crash, as a dying machine would)."""
        self._run("pg_ctl", "-D", str(self.data(node)), "-m", mode, "-w", "stop")

    def promote(self, node: str = REPLICA) -> None:
        """Promote the replica to primary and wait until it accepts writes."""
        self._run("pg_ctl", "-D", str(self.data(node)), "-w", "promote")

    def url(self, node: str, database: str = "postgres") -> str:
        """A SQLAlchemy URL of ``database`` on ``node``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.ports[node]}/{database}"

    def failover_url(self, database: str) -> str:
        """A multi-host URL naming both nodes, connecting to whichever accepts writes."""
        hosts = "&".join(f"host=127.0.0.1:{self.ports[node]}" for node in (PRIMARY, REPLICA))
        return f"postgresql+psycopg://postgres@/{database}?{hosts}&target_session_attrs=read-write"

    def execute(self, node: str, sql: str, database: str = "postgres") -> object:
        """Run one statement in autocommit on ``node``; return its first value, if any."""
        engine = create_engine(self.url(node, database), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                result = connection.execute(text(sql))
                return result.scalar() if result.returns_rows else None
        finally:
            engine.dispose()

    def wait_replicated(self, database: str, timeout: float = 30.0) -> None:
        """Wait until ``database`` exists on the replica (created on the primary)."""
        deadline = time.monotonic() + timeout
        query = f"SELECT count(*) FROM pg_database WHERE datname = '{database}'"
        while self.execute(REPLICA, query) != 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"database {database} did not reach the replica")
            time.sleep(0.05)

    def set_apply_delay(self, milliseconds: int) -> None:
        """Delay the replica's replay of each commit (replication lag), via ALTER SYSTEM."""
        self.execute(REPLICA, f"ALTER SYSTEM SET recovery_min_apply_delay = '{milliseconds}ms'")
        self.execute(REPLICA, "SELECT pg_reload_conf()")

    def destroy(self) -> None:
        """Stop both servers at once (``-m immediate``) and remove the directory."""
        if self._destroyed:
            return
        self._destroyed = True
        for node in (REPLICA, PRIMARY):
            if (self.data(node) / "postmaster.pid").exists():
                self._run(
                    "pg_ctl", "-D", str(self.data(node)), "-m", "immediate", "stop", check=False
                )
        shutil.rmtree(self.dir, ignore_errors=True)
        atexit.unregister(self.destroy)
