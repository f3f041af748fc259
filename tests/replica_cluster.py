"""The private primary + replica cluster as pytest sees it: made once, skipped or failed if it
cannot be made here (a laptop skips and says so; CI, where backends are required, fails)."""

import pytest

from tests.backends import backends_required
from tests.pg_cluster import PRIMARY, PgCluster, cluster_unavailable

BACKEND_NAME = "postgresql-replica"


def require_cluster() -> None:
    """Skip (laptop) or fail (CI) the current test when no private cluster can be made."""
    reason = cluster_unavailable()
    if reason is None:
        return
    if backends_required():
        pytest.fail(f"replica cluster required in CI but unavailable: {reason}", pytrace=False)
    # Listed with the skipped backends at the end of the run; the coverage gate is then off.
    from tests.conftest import _unreachable

    _unreachable[BACKEND_NAME] = reason
    pytest.skip(reason)


def make_cluster(database: str, *, synchronous: bool = False) -> PgCluster:
    """A running cluster whose ``database`` is migrated to head and present on the replica."""
    from cosmos_models import DatabaseConnection

    require_cluster()
    cluster = PgCluster(synchronous=synchronous)
    try:
        cluster.execute(PRIMARY, f'CREATE DATABASE "{database}"')
        with DatabaseConnection(cluster.url(PRIMARY, database)) as db:
            db.create_tables()
        cluster.wait_replicated(database)
    except BaseException:
        cluster.destroy()
        raise
    return cluster
