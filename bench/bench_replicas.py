"""What read replicas cost: a write and a read with replicas configured vs without, side by side.

A private primary + streaming replica (tests/pg_cluster.py) on this machine. With replicas a
write takes the primary's WAL position after its commit (one more round trip), and a read
checks the chosen replica's replay position before it starts (one more round trip, plus any
wait for replay). Printed: median and p95 per call, and the ratio replicas/no replicas;
recorded for ``make bench-check``: its inverse (no replicas over replicas, higher is better).

Usage: python bench/bench_replicas.py [--calls 300] [--quick]
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import interleaved_latencies, median_p95_ms, record_ratio, report  # noqa: E402

from cosmos_models import (  # noqa: E402
    DatabaseConnection,
    create_prompt,
    create_run,
    get_run,
    record_progress,
)
from tests.pg_cluster import PRIMARY, REPLICA, PgCluster, cluster_unavailable  # noqa: E402

DATABASE = "cosmos_bench_replicas"
PROMPT = {"model_type": "transfer", "prompt_text": "bench", "inputs": {}, "parameters": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="100 calls")
    args = parser.parse_args()
    calls = 100 if args.quick else args.calls
    reason = cluster_unavailable()
    if reason is not None:
        sys.exit(f"bench_replicas: cannot make a private cluster here: {reason}")
    cluster = PgCluster()
    try:
        cluster.execute(PRIMARY, f'CREATE DATABASE "{DATABASE}"')
        primary_url = cluster.url(PRIMARY, DATABASE)
        with DatabaseConnection(primary_url) as setup:
            setup.create_tables()
        cluster.wait_replicated(DATABASE)
        replica_url = cluster.url(REPLICA, DATABASE)
        with (
            DatabaseConnection(primary_url) as plain,
            DatabaseConnection(primary_url, replicas=[replica_url]) as routed,
        ):
            run_id = create_run(plain, create_prompt(plain, PROMPT).id).id
            get_run(routed, run_id)  # both pools connected before the clock starts
            writes = interleaved_latencies(
                {
                    "no replicas": lambda: record_progress(plain, run_id, "bench", 1.0),
                    "replicas": lambda: record_progress(routed, run_id, "bench", 1.0),
                },
                dict.fromkeys(("no replicas", "replicas"), calls),
            )
            reads = interleaved_latencies(
                {
                    "no replicas": lambda: get_run(plain, run_id),
                    "replicas": lambda: get_run(routed, run_id),
                },
                dict.fromkeys(("no replicas", "replicas"), calls),
            )
            # A read right after this connection's own write: waits for the replica's replay.
            after_write = interleaved_latencies(
                {
                    "replicas": lambda: (
                        record_progress(routed, run_id, "bench", 1.0),
                        get_run(routed, run_id),
                    )
                },
                {"replicas": calls},
            )
            routing = routed.read_routing_stats()
    finally:
        cluster.destroy()
    rows = []
    for what, samples in (("record_progress", writes), ("get_run", reads)):
        base, _ = median_p95_ms(samples["no replicas"])
        median, _ = median_p95_ms(samples["replicas"])
        record_ratio(f"replicas/{what} without vs with replicas", base / median)
        for name, latencies in samples.items():
            median, p95 = median_p95_ms(latencies)
            rows.append({"call": what, "setup": name, "median_ms": median, "p95_ms": p95,
                         "ratio": median / base})  # fmt: skip
    median, p95 = median_p95_ms(after_write["replicas"])
    rows.append({"call": "record_progress + get_run", "setup": "replicas", "median_ms": median,
                 "p95_ms": p95})  # fmt: skip
    report("replicas", rows, ["call", "setup", "median_ms", "p95_ms", "ratio"])
    print(f"reads: {routing}")


if __name__ == "__main__":
    main()
