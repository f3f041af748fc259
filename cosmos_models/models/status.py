"""The run status vocabulary in one place: the statuses, the allowed moves, and named sets.

Every rule about statuses reads from here: the lifecycle (``ALLOWED_TRANSITIONS``), workers
(``ACTIVE_STATUSES``, ``CLAIM_TARGETS``), pruning and progress (``FINAL_STATUSES``) and the
CLI's default watch list (``UNFINISHED_STATUSES``).
"""

import enum
from typing import Final


class RunStatus(enum.StrEnum):
    """Where a run is in its lifecycle; stored by value (``"pending"``…)."""

    PENDING = "pending"
    UPLOADING = "uploading"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for completed, failed and cancelled: nothing follows them."""
        return not ALLOWED_TRANSITIONS[self]


# The lifecycle, read as the spec reads: pending → uploading → running → downloading → completed,
# failing or being cancelled from anywhere along the way. A retry is a new run of the same prompt.
ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset(
        {RunStatus.UPLOADING, RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.UPLOADING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.DOWNLOADING, RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.DOWNLOADING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


FINAL_STATUSES: Final = tuple(status for status in RunStatus if status.is_final)
"""Completed, failed and cancelled, in the enum's order: nothing follows them."""

UNFINISHED_STATUSES: Final = tuple(status for status in RunStatus if not status.is_final)
"""Pending and the active statuses: runs whose progress can still change."""

ACTIVE_STATUSES: Final = frozenset({RunStatus.UPLOADING, RunStatus.RUNNING, RunStatus.DOWNLOADING})
"""Statuses in which a worker holds a run: from ``claim_next_run`` until a final status."""

CLAIM_TARGETS: Final = frozenset({RunStatus.UPLOADING, RunStatus.RUNNING})
"""Where ``claim_next_run`` may move a pending run."""
