"""Databases as the earlier implementation wrote them, on SQLite and PostgreSQL."""

import sqlite3
from pathlib import Path

from sqlalchemy import URL, create_engine, text

# Copies of ../shared/legacy/*.sql (the design's sample), kept with the tests so that a clone or
# an sdist runs them without the design folder beside it.
DATA = Path(__file__).resolve().parent / "data" / "legacy_v0"
SCHEMA_SQLITE = DATA / "schema_v0_sqlite.sql"
SAMPLE = DATA / "sample_v0.sql"

# The v0 schema on PostgreSQL, as ../shared/legacy/README.md describes it.
SCHEMA_POSTGRES = """
CREATE TABLE prompts (
    id VARCHAR NOT NULL PRIMARY KEY, model_type VARCHAR NOT NULL, prompt_text TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE, inputs JSON NOT NULL, parameters JSON NOT NULL);
CREATE TABLE runs (
    id VARCHAR NOT NULL PRIMARY KEY, prompt_id VARCHAR NOT NULL, model_type VARCHAR NOT NULL,
    status VARCHAR NOT NULL, created_at TIMESTAMP WITH TIME ZONE,
    updated_at TIMESTAMP WITH TIME ZONE, started_at TIMESTAMP WITH TIME ZONE,
    completed_at TIMESTAMP WITH TIME ZONE, execution_config JSON NOT NULL, outputs JSON NOT NULL,
    metadata JSON NOT NULL);
CREATE TABLE progress (
    id SERIAL PRIMARY KEY, run_id VARCHAR NOT NULL, timestamp TIMESTAMP WITH TIME ZONE,
    stage VARCHAR NOT NULL, percentage FLOAT NOT NULL, message TEXT NOT NULL,
    CONSTRAINT check_percentage_range CHECK (percentage >= 0.0 AND percentage <= 100.0));
"""
# Foreign keys were declared but, on SQLite, never enforced: the samples hold orphans, which a
# PostgreSQL v0 database could only hold if its constraints had been dropped. We leave them out.

HARDER_ROWS = """
INSERT INTO prompts VALUES ('ps_null_time','predict','Continue this animation',NULL,
  '{"frames": ["frame1.png", "frame2.png"], "unicode": "\\u00e9\\u4e2d", "big": 12345678901234567890}',
  '{"fps": 30, "nested": {"l1": {"l2": [1, 2.5, null, true]}}}');
INSERT INTO runs VALUES ('rs_null_times','ps_null_time','predict','pending',NULL,NULL,NULL,NULL,
  '{}','{}','{}');
INSERT INTO runs VALUES ('rs_orphan','ps_gone','transfer','failed','2025-01-02 00:00:00.000000',
  '2025-01-02 00:00:00.000000',NULL,NULL,'{}','{}','{}');
INSERT INTO progress VALUES (8,'rs_orphan','2025-01-02 00:00:01.000000','uploading',1.0,'of an orphan');
INSERT INTO progress VALUES (9,'rs_null_times',NULL,'uploading',0.0,'no time');
"""


def make_legacy_sqlite(path: Path, *, harder: bool = False, extra_sql: str = "") -> Path:
    """Build a v0 SQLite file the way ../shared/legacy/README.md says."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(SCHEMA_SQLITE.read_text())
        connection.executescript(SAMPLE.read_text())
        if harder:
            connection.executescript(HARDER_ROWS)
        if extra_sql:
            connection.executescript(extra_sql)
        connection.commit()
    finally:
        connection.close()
    return path


def make_legacy_postgres(url: URL) -> None:
    """Build the v0 schema and the sample's rows (without its orphan) on PostgreSQL."""
    sample = [
        line for line in SAMPLE.read_text().splitlines() if line.strip() and "gone99" not in line
    ]
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in SCHEMA_POSTGRES.split(";"):
                if statement.strip():
                    connection.execute(text(statement))
            for line in sample:
                connection.exec_driver_sql(line.replace("%", "%%"))
            connection.execute(
                text(
                    "INSERT INTO prompts VALUES ('ps_null_time','predict','x',NULL,"
                    "'{\"a\": 1}','{}')"
                )
            )
            connection.execute(
                text("SELECT setval('progress_id_seq', (SELECT MAX(id) FROM progress))")
            )
    finally:
        engine.dispose()
