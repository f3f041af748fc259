"""Shared helpers for the benchmarks: side-by-side timing and result files.

Timings alternate between the contenders round by round and keep each one's best round, so a
burst of noise on this shared machine hurts both sides alike instead of deciding the ratio; or,
for two sides of the same short call, compare adjacent blocks pair by pair and keep the median
of the pairs' ratios (``paired_rates``).
"""

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# bench/check.py points this elsewhere, so that its quick runs leave `make bench`'s files alone.
RESULTS = Path(
    os.environ.get("COSMOS_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)
RATIOS = "ratios.json"


def best_of(contenders: dict[str, Callable[[], int]], rounds: int = 5) -> dict[str, float]:
    """Run each contender ``rounds`` times, interleaved; return its best rate (items/second).

    A contender runs its whole workload once per call and returns how many items it handled.
    """
    best: dict[str, float] = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            items = run()
            elapsed = time.perf_counter() - start
            best[name] = max(best[name], items / elapsed)
    return best


@dataclass(frozen=True)
class Paired:
    """Rates (items/second) of a reference and a contender measured in adjacent blocks."""

    reference: list[float]
    contender: list[float]

    @property
    def ratios(self) -> list[float]:
        """Contender rate / reference rate, one per pair, sorted."""
        return sorted(c / r for r, c in zip(self.reference, self.contender, strict=True))

    @property
    def median(self) -> float:
        """The median of the pairs' ratios: the number to store."""
        return statistics.median(self.ratios)

    def quartiles(self) -> tuple[float, float]:
        """The 25th and 75th percentiles of the pairs' ratios (how much the pairs disagree)."""
        q1, _, q3 = statistics.quantiles(self.ratios, n=4, method="inclusive")
        return q1, q3


def paired_rates(reference: Callable[[], int], contender: Callable[[], int], pairs: int) -> Paired:
    """Run a block of ``reference`` and one of ``contender`` back to back, ``pairs`` times
    (which goes first alternates); return every block's rate.

    For a ratio of two sides of the same short call: a burst of noise on this virtual machine
    (a descheduled vCPU, a neighbour) lasts milliseconds and hits one or two adjacent blocks,
    so each pair's ratio compares the sides under the same conditions and the median of the
    pairs drops the hit ones. Best-of-rounds instead keeps each side's luckiest round, measured
    at different moments: with rounds of a tenth of a second it swings by 0.1 between runs.
    """
    rates: dict[str, list[float]] = {"reference": [], "contender": []}
    sides = (("reference", reference), ("contender", contender))
    for index in range(pairs):
        for name, run in sides if index % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            items = run()
            rates[name].append(items / (time.perf_counter() - start))
    return Paired(rates["reference"], rates["contender"])


def interleaved_latencies(
    contenders: dict[str, Callable[[], object]],
    rounds: dict[str, int],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time single calls of each contender, taking turns; return each one's latencies (seconds).

    ``rounds`` says how many calls each contender gets (a slow contender may get fewer); calls
    alternate while more than one contender still has calls left, so noise hits all alike.
    ``clock=time.process_time`` counts this process's CPU time only: on a loaded machine a
    call longer than a scheduler slice is preempted and its wall time inflated, a shorter one
    is not, so CPU time compares in-process work (SQLite) more fairly.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for index in range(max(rounds.values())):
        for name, call in contenders.items():
            if index < rounds[name]:
                start = clock()
                call()
                samples[name].append(clock() - start)
    return samples


def median_p95_ms(samples: list[float]) -> tuple[float, float]:
    """The median and 95th percentile of ``samples`` (seconds), in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def machine() -> str:
    """A one-line description of where the numbers were measured, with the load at that moment.

    The dev machine is shared: the 1/5/15-minute load averages say how busy it was.
    """
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load}"
    )


def report(name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` as a table and write them to ``bench/results/<name>.json``."""
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "results": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    print(f"(written to {RESULTS / (name + '.json')})")


def record_ratio(name: str, value: float) -> None:
    """Store a ratio under ``name`` in ``bench/results/ratios.json`` for ``make bench-check``.

    Higher must be better (the reference's time divided by ours, or our speed divided by the
    reference's), and the ratio must mean the same at the script's ``--quick`` sizes: the check
    re-runs the script that recorded it with ``--quick`` and fails if it drops over 30%.
    """
    path = RESULTS / RATIOS
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[name] = {
        "value": round(value, 4),
        "script": Path(sys.argv[0]).name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)
