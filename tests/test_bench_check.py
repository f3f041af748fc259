"""The benchmarks' regression guard (bench/check.py, bench/common.record_ratio), timing nothing."""

import ast
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _module("check")


def stored(**values: float) -> dict[str, dict[str, Any]]:
    return {name: {"value": value, "script": "bench_x.py"} for name, value in values.items()}


def test_a_drop_of_exactly_30_percent_passes_and_a_hair_more_fails() -> None:
    before = stored(a=1.0, b=1.0, c=2.0)
    after = stored(a=0.7, b=0.6999, c=2.5)
    verdicts = {v.name: v for v in check.compare(before, after, 0.3)}
    assert not verdicts["a"].failed
    assert verdicts["b"].failed
    assert not verdicts["c"].failed  # better is never a failure
    assert verdicts["b"].line().startswith("FAIL  b: 0.700")
    assert "floor 0.700" in verdicts["b"].line()
    assert verdicts["c"].line().startswith("ok    c: 2.500 (stored 2.000, +25%")


def test_a_stored_ratio_not_measured_again_fails_and_a_new_one_is_not_judged() -> None:
    verdicts = check.compare(stored(kept=1.0, gone=1.0), stored(kept=1.0, new=0.01))
    assert [(v.name, v.failed) for v in verdicts] == [("gone", True), ("kept", False)]
    assert verdicts[0].line() == "FAIL  gone: not measured again (stored 1.000)"


def test_the_tolerance_is_a_parameter() -> None:
    (verdict,) = check.compare(stored(a=1.0), stored(a=0.85), 0.1)
    assert verdict.failed
    assert verdict.floor == pytest.approx(0.9)


def test_no_stored_ratios_fails_saying_to_run_make_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(check, "STORED", tmp_path / "absent.json")
    assert check.main([]) == 1
    assert "run `make bench` first" in capsys.readouterr().out


def _fake_script(directory: Path, name: str, body: str) -> None:
    (directory / name).write_text(
        "import json, os, sys\n"
        "assert sys.argv[1:] == ['--quick']\n"
        "out = os.path.join(os.environ['COSMOS_BENCH_RESULTS'], 'ratios.json')\n" + body
    )


def test_main_reruns_each_recording_script_quick_and_names_the_dropped_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ratios = tmp_path / "ratios.json"
    ratios.write_text(
        json.dumps(
            {
                "fast/kept": {"value": 1.0, "script": "bench_fast.py"},
                "fast/dropped": {"value": 1.0, "script": "bench_fast.py"},
                "broken/x": {"value": 1.0, "script": "bench_broken.py"},
            }
        )
    )
    _fake_script(
        tmp_path,
        "bench_fast.py",
        "json.dump({'fast/kept': {'value': 0.9}, 'fast/dropped': {'value': 0.5}}, open(out, 'w'))\n",
    )
    _fake_script(tmp_path, "bench_broken.py", "sys.exit(3)\n")
    monkeypatch.setattr(check, "STORED", ratios)
    monkeypatch.setattr(check, "BENCH", tmp_path)
    assert check.main([]) == 1
    out = capsys.readouterr().out
    assert "ok    fast/kept: 0.900" in out
    assert "FAIL  fast/dropped: 0.500" in out
    assert "FAIL  broken/x: not measured again" in out
    assert "FAIL  bench_broken.py exited with 3" in out
    # --only narrows the check to some ratios: those kept their values.
    assert check.main(["--only", "fast/kept"]) == 0
    assert "all 1 ratios within 30%" in capsys.readouterr().out


def test_record_ratio_keeps_other_ratios_and_names_its_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSMOS_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["bench/bench_reads.py"])
    common = _module("common")
    common.record_ratio("a", 1.23456)
    common.record_ratio("b", 2.0)
    common.record_ratio("a", 0.5)
    written = json.loads((tmp_path / "ratios.json").read_text())
    assert {name: entry["value"] for name, entry in written.items()} == {"a": 0.5, "b": 2.0}
    assert written["a"]["script"] == "bench_reads.py"
    assert check.load(tmp_path / "ratios.json") == written


def _calls(script: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.Call)]


def _is_quick_option(call: ast.Call) -> bool:
    return (
        isinstance(call.func, ast.Attribute)
        and call.func.attr == "add_argument"
        and any(isinstance(arg, ast.Constant) and arg.value == "--quick" for arg in call.args)
    )


SCRIPTS = sorted(BENCH.glob("bench_*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_every_bench_script_accepts_quick_and_records_a_ratio(script: Path) -> None:
    calls = _calls(script)
    assert any(_is_quick_option(call) for call in calls), f"{script.name} has no --quick"
    assert any(
        isinstance(call.func, ast.Name) and call.func.id == "record_ratio" for call in calls
    ), f"{script.name} records no ratio for make bench-check"


def test_the_quick_option_check_sees_a_script_without_one(tmp_path: Path) -> None:
    script = tmp_path / "bench_x.py"
    script.write_text("parser.add_argument('--rows', type=int)\nparser.add_argument('-q')\n")
    assert not any(_is_quick_option(call) for call in _calls(script))
    script.write_text("parser.add_argument('--quick', action='store_true')\n")
    assert any(_is_quick_option(call) for call in _calls(script))


def test_the_stored_baseline_names_existing_scripts_and_the_machine_load() -> None:
    stored = check.load(check.STORED)
    assert stored, "bench/results/ratios.json is committed: the baseline make bench-check uses"
    for name, entry in stored.items():
        assert (BENCH / entry["script"]).is_file(), name
        assert entry["value"] > 0, name
        assert "load average" in entry["machine"], name


def test_paired_rates_alternate_who_goes_first_and_the_median_drops_a_noisy_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    common = _module("common")
    now = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: now[0])
    order: list[str] = []
    # The reference takes 1 s a block; the contender 1.25 s, except one block hit by noise.
    contender_seconds = iter([1.25, 1.25, 10.0, 1.25, 1.25])

    def reference() -> int:
        order.append("r")
        now[0] += 1.0
        return 100

    def contender() -> int:
        order.append("c")
        now[0] += next(contender_seconds)
        return 100

    paired = common.paired_rates(reference, contender, 5)
    assert order == ["r", "c", "c", "r", "r", "c", "c", "r", "r", "c"]
    assert paired.reference == [100.0] * 5
    assert paired.ratios == pytest.approx([0.1, 0.8, 0.8, 0.8, 0.8])
    assert paired.median == pytest.approx(0.8)
    assert paired.quartiles() == pytest.approx((0.8, 0.8))
