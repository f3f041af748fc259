"""Benchmark 2: building validated ``Progress`` objects vs a plain SQLAlchemy declarative class.

Target: at least 0.8x the plain class's objects/second, with validation on (issue 12).

    .venv/bin/python bench/bench_construction.py [--quick]
"""

import argparse
from datetime import UTC, datetime

from common import best_of, record_ratio, report
from sqlalchemy import DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cosmos_models import Progress

N = 20_000
QUICK_N = 5_000
TARGET = 0.8


class Base(DeclarativeBase):
    pass


class PlainProgress(Base):
    """The same columns as ``progress``, without validation."""

    __tablename__ = "plain_progress"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255))
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stage: Mapped[str] = mapped_column(String(100))
    percentage: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N:,} objects, 3 rounds")
    quick = parser.parse_args().quick
    n, rounds = (QUICK_N, 3) if quick else (N, 5)
    moment = datetime.now(UTC)

    def plain() -> int:
        for i in range(n):
            PlainProgress(
                run_id="rs_1", timestamp=moment, stage="inference", percentage=i % 100, message="m"
            )
        return n

    def validated() -> int:
        for i in range(n):
            Progress(
                run_id="rs_1", timestamp=moment, stage="inference", percentage=i % 100, message="m"
            )
        return n

    rates = best_of({"plain": plain, "validated": validated}, rounds)
    ratio = rates["validated"] / rates["plain"]
    record_ratio("construction/Progress vs plain declarative", ratio)
    report(
        "construction",
        [
            {
                "what": "plain SQLAlchemy declarative",
                "objects": n,
                "per_second": rates["plain"],
                "ratio": 1.0,
            },
            {
                "what": "cosmos_models.Progress (validated)",
                "objects": n,
                "per_second": rates["validated"],
                "ratio": ratio,
            },
        ],
        ["what", "objects", "per_second", "ratio"],
    )
    print(f"target >= {TARGET}x: {'met' if ratio >= TARGET else 'MISSED'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
