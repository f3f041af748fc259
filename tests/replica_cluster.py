"""The private primary + replica cluster as pytest sees it: made once, skipped or failed if it
cannot be made here (a laptop skips and says so; CI, where backends are required, fails)."""

from tests.conftest import unavailable
from tests.pg_cluster import PRIMARY, PgCluster, cluster_unavailable

BACKEND_NAME = "postgresql-replica"


def require_cluster() -> None:
    """Skip (laptop) or fail (CI) the current test when no private cluster can be made."""
    reason = cluster_unavailable()
    if reason is not None:
        unavailable(BACKEND_NAME, reason)


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
