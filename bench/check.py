"""The benchmarks' regression guard: re-measure every stored ratio at reduced size, compare.

``make bench`` stores ratios in ``bench/results/ratios.json`` (``common.record_ratio``: name,
value, the script that measured it; higher is better). This re-runs each of those scripts once
with ``--quick``, its results written to a scratch directory, and fails (exit 1) naming every
ratio that dropped more than 30% below its stored value or was not measured again. With no
stored ratios it fails too, saying to run ``make bench`` first. Timings live here, never in tests.

    .venv/bin/python bench/check.py [--tolerance 0.3] [--only PREFIX]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
STORED = BENCH / "results" / "ratios.json"
TOLERANCE = 0.3


@dataclass(frozen=True)
class Verdict:
    """One stored ratio against its new measure (``None``: not measured again)."""

    name: str
    stored: float
    measured: float | None
    tolerance: float

    @property
    def floor(self) -> float:
        """The lowest value that still passes."""
        return self.stored * (1 - self.tolerance)

    @property
    def failed(self) -> bool:
        """Not measured again, or below the floor (the floor itself passes)."""
        return self.measured is None or self.measured < self.floor

    def line(self) -> str:
        """One line for the report, naming the ratio."""
        if self.measured is None:
            return f"FAIL  {self.name}: not measured again (stored {self.stored:.3f})"
        change = self.measured / self.stored - 1 if self.stored else 0.0
        status = "FAIL" if self.failed else "ok  "
        return (
            f"{status}  {self.name}: {self.measured:.3f} (stored {self.stored:.3f}, "
            f"{change:+.0%}; floor {self.floor:.3f})"
        )


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The ratios stored in ``path`` ({} if the file is absent)."""
    if not path.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return data


def compare(
    stored: dict[str, dict[str, Any]],
    measured: dict[str, dict[str, Any]],
    tolerance: float = TOLERANCE,
) -> list[Verdict]:
    """A verdict for each stored ratio, by name; ratios only measured now are not judged."""
    return [
        Verdict(
            name,
            float(entry["value"]),
            float(measured[name]["value"]) if name in measured else None,
            tolerance,
        )
        for name, entry in sorted(stored.items())
    ]


def remeasure(scripts: list[str], directory: Path) -> list[str]:
    """Run each script with ``--quick``, results into ``directory``; return the ones that failed."""
    environment = {**os.environ, "COSMOS_BENCH_RESULTS": str(directory)}
    failed = []
    for script in scripts:
        print(f"== {script} --quick", flush=True)
        done = subprocess.run(
            [sys.executable, str(BENCH / script), "--quick"],
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print((done.stdout + done.stderr)[-2000:])
            failed.append(f"{script} exited with {done.returncode}")
    return failed


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit code (0 all kept, 1 a ratio dropped or is missing)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--only", default="", help="check the ratios whose name starts so")
    args = parser.parse_args(argv)
    stored = {k: v for k, v in load(STORED).items() if k.startswith(args.only)}
    if not stored:
        print(
            f"no stored ratios in {STORED}{' for ' + args.only if args.only else ''}: "
            "run `make bench` first"
        )
        return 1
    scripts = sorted({entry["script"] for entry in stored.values()})
    with tempfile.TemporaryDirectory() as scratch:
        problems = remeasure(scripts, Path(scratch))
        verdicts = compare(stored, load(Path(scratch) / "ratios.json"), args.tolerance)
    for verdict in verdicts:
        print(verdict.line())
    failures = [v.name for v in verdicts if v.failed]
    for problem in problems:
        print(f"FAIL  {problem}")
    if failures or problems:
        print(
            f"{len(failures)} of {len(verdicts)} ratios dropped over {args.tolerance:.0%} "
            "or were not measured again"
        )
        return 1
    print(f"all {len(verdicts)} ratios within {args.tolerance:.0%} of the stored values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
