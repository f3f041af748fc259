"""Benchmark: migrations (upgrade of an empty database, adoption of a large v0 file).

Prints a table and writes bench/results/migrations.json. Each measured step runs in a child
process so that its peak memory (max RSS) is its own. Recorded for ``make bench-check``: the
time ``sqlite3`` took to write the v0 file over the adoption's time beyond an empty upgrade (the
child's start and the empty migrations); both grow with the rows, so the ratio holds at
``--quick`` sizes (200,000 progress rows, 1,000 runs).

    .venv/bin/python bench/bench_migrations.py [--progress-rows 1000000] [--quick]
"""

import argparse
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import RESULTS, record_ratio  # noqa: E402

SCHEMA = ROOT / "tests" / "data" / "legacy_v0" / "schema_v0_sqlite.sql"


def build_legacy(path: Path, prompts: int, runs: int, progress: int) -> None:
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA.read_text())
    rng = random.Random(7)
    with connection:
        connection.executemany(
            "INSERT INTO prompts VALUES (?, 'transfer', 'text', '2025-01-04 12:00:00.000000', ?, ?)",
            (
                (
                    f"ps_{i}",
                    json.dumps({"video": f"/in/{i}.mp4"}),
                    json.dumps({"num_steps": i % 50}),
                )
                for i in range(prompts)
            ),
        )
        connection.executemany(
            "INSERT INTO runs VALUES (?, ?, 'transfer', 'completed', '2025-01-04 12:05:00.000000',"
            " '2025-01-04 12:05:00.000000', NULL, NULL, '{}', '{}', '{}')",
            ((f"rs_{i}", f"ps_{i % prompts}") for i in range(runs)),
        )
        connection.executemany(
            "INSERT INTO progress VALUES (?, ?, ?, 'inference', ?, 'step')",
            (
                (
                    i,
                    f"rs_{i % runs}",
                    f"2025-01-04 12:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000000:06d}",
                    rng.random() * 100,
                )
                for i in range(1, progress + 1)
            ),
        )
    connection.close()


def measured(code: str) -> tuple[float, float, str]:
    """Run ``code`` in a child Python; return (seconds, peak RSS MiB, its stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--progress-rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5_000)
    parser.add_argument("--quick", action="store_true", help="200,000 progress rows, 1,000 runs")
    args = parser.parse_args()
    if args.quick:
        args.progress_rows, args.runs = 200_000, 1_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.db"
        seconds, peak, _ = measured(
            f"from cosmos_models.db.migrate import upgrade; upgrade({str(empty)!r})"
        )
        empty_seconds = seconds
        rows.append(
            {
                "step": "upgrade empty SQLite to head",
                "rows": 0,
                "seconds": round(seconds, 3),
                "peak_mib": round(peak, 1),
            }
        )
        legacy = Path(tmp) / "legacy.db"
        start = time.perf_counter()
        build_legacy(legacy, prompts=1_000, runs=args.runs, progress=args.progress_rows)
        build_seconds = time.perf_counter() - start
        size = legacy.stat().st_size / 2**20
        code = (
            "from cosmos_models.db.migrate import upgrade\n"
            f"r = upgrade({str(legacy)!r}, report=print)\n"
        )
        seconds, peak, out = measured(code)
        rows.append(
            {
                "step": f"adopt earlier SQLite file ({size:.0f} MiB, with backup)",
                "rows": args.progress_rows,
                "seconds": round(seconds, 3),
                "peak_mib": round(peak, 1),
            }
        )
        print(out)
    beyond_empty = max(seconds - empty_seconds, 1e-3)
    print(
        f"writing the v0 file / adopting it beyond an empty upgrade: {build_seconds / beyond_empty:.2f}"
    )
    record_ratio("migrations/sqlite3 writing v0 vs adopting it", build_seconds / beyond_empty)
    print(f"{'step':55} {'progress rows':>14} {'seconds':>9} {'peak MiB':>9}")
    for row in rows:
        print(f"{row['step']:55} {row['rows']:>14,} {row['seconds']:>9.2f} {row['peak_mib']:>9.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "migrations.json").write_text(
        json.dumps({"backend": "sqlite", "results": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
