"""Identifiers in the spec's style: ``ps_20250104_120000_abc123def456``.

UTC time to the second (readable, sorts by creation) plus 48 random bits from ``secrets``, so two
processes creating ids in the same second collide with odds of about 1 in 10^14 per pair.
"""

import secrets
from datetime import datetime

from cosmos_models.models.types import utcnow


def new_id(prefix: str, now: datetime | None = None) -> str:
    """Return a new id such as ``rs_20250104_120000_0f3a9c81b2d4`` for ``prefix="rs"``."""
    moment = now or utcnow()
    return f"{prefix}_{moment:%Y%m%d_%H%M%S}_{secrets.token_hex(6)}"


def new_prompt_id() -> str:
    """Return a new prompt id (``ps_…``)."""
    return new_id("ps")


def new_run_id() -> str:
    """Return a new run id (``rs_…``)."""
    return new_id("rs")
