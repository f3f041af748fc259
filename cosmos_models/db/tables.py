"""Core handles on the three tables, for the statements that skip the ORM.

Batch writes, compare-and-set updates, listings and pruning build SQL on these; the models in
prompt.py, run.py and progress.py define them.
"""

from typing import Final

from sqlalchemy import Table

from cosmos_models.models.progress import Progress
from cosmos_models.models.prompt import Prompt
from cosmos_models.models.run import Run, RunRead
from cosmos_models.models.types import metadata

PROMPTS: Final[Table] = metadata.tables[Prompt.__tablename__]
RUNS: Final[Table] = metadata.tables[Run.__tablename__]
PROGRESS: Final[Table] = metadata.tables[Progress.__tablename__]


TABLES: Final[dict[str, Table]] = {"prompts": PROMPTS, "runs": RUNS, "progress": PROGRESS}
"""The three tables by name, parents first (the order rows are restored in)."""


RUN_READ_COLUMNS: Final = tuple(
    column for column in RUNS.c if column.key in RunRead.model_fields or column.key == "metadata"
)
"""The runs columns a ``RunRead`` holds ("metadata" is its run_metadata), in the table's order."""
