"""An app's own table beside cosmos_models' tables: a reviewer's rating of a finished run.

Declared on ``app_metadata()`` (a MetaData of the app's own that also holds copies of the package's
tables), so ``Field(foreign_key="runs.id")`` resolves; created by this example's own Alembic
history (``alembic -c examples/app_tables/alembic.ini upgrade head``), never by ours.
"""

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from cosmos_models import app_metadata
from cosmos_models.models.types import EXACT_TEXT_TABLE_OPTIONS, UTCDateTime, utcnow

metadata = app_metadata()


class AppModel(SQLModel, registry=registry(metadata=metadata)):
    """Base of this app's tables: they live on ``metadata``, not on SQLModel's default one."""


class RunReview(AppModel, table=True):
    """A reviewer's verdict on a run; deleted with the run (ON DELETE CASCADE)."""

    __tablename__ = "app_run_reviews"
    # On MariaDB a foreign key's text columns must share the referenced column's collation.
    __table_args__ = (EXACT_TEXT_TABLE_OPTIONS,)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE", index=True, sa_type=String(255))
    reviewer: str = Field(sa_type=String(100))
    stars: int = Field(ge=1, le=5)
    reviewed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
