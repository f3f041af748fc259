"""The page's files ship in the wheel: ``cosmos-models serve`` works from an installed package."""

import zipfile
from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

from cosmos_models.api.dashboard import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_every_file_of_the_page(tmp_path: Path) -> None:
    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    names = set(zipfile.ZipFile(wheel).namelist())
    page_files = sorted(path.name for path in STATIC_DIR.iterdir())
    assert {"index.html", "dashboard.js", "dashboard.css"} <= set(page_files)
    missing = [name for name in page_files if f"cosmos_models/api/static/{name}" not in names]
    assert missing == []
