"""Benchmark 2: building validated ``Progress`` objects vs a plain SQLAlchemy declarative class.

Target: at least 0.8x the plain class's objects/second, with validation on (issue 12).
"""

from datetime import UTC, datetime

from common import best_of, report
from sqlalchemy import DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cosmos_models import Progress

N = 20_000
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
    moment = datetime.now(UTC)

    def plain() -> int:
        for i in range(N):
            PlainProgress(
                run_id="rs_1", timestamp=moment, stage="inference", percentage=i % 100, message="m"
            )
        return N

    def validated() -> int:
        for i in range(N):
            Progress(
                run_id="rs_1", timestamp=moment, stage="inference", percentage=i % 100, message="m"
            )
        return N

    rates = best_of({"plain": plain, "validated": validated})
    ratio = rates["validated"] / rates["plain"]
    report(
        "construction",
        [
            {
                "what": "plain SQLAlchemy declarative",
                "objects": N,
                "per_second": rates["plain"],
                "ratio": 1.0,
            },
            {
                "what": "cosmos_models.Progress (validated)",
                "objects": N,
                "per_second": rates["validated"],
                "ratio": ratio,
            },
        ],
        ["what", "objects", "per_second", "ratio"],
    )
    print(f"target >= {TARGET}x: {'met' if ratio >= TARGET else 'MISSED'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
