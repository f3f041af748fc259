"""Checks of the arguments of public functions: a wrong shape is a ``ValueError`` naming it.

Without them a wrong shape fails somewhere deeper, as whatever Python or the driver happens to
raise (``TypeError``, ``OverflowError``, ``UnicodeEncodeError``, a SQL error), or, worse, works:
a ``str`` is an iterable of str, so ``claim_next_run(db, "w", "transfer")`` would look for the
model types ``"t"``, ``"r"``, ``"a"``…
"""

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.status import RunStatus
from cosmos_models.models.values import _check_unicode

# The largest integer every backend binds (a signed 64-bit integer: SQLite, BIGINT).
MAX_INT: Final = 2**63 - 1
# The largest seq a progress event can have: seq columns are INTEGER (32-bit on PostgreSQL and
# MariaDB), where a larger bound parameter fails ("out of range") instead of matching nothing.
MAX_SEQ: Final = 2**31 - 1


def check_str(value: Any, name: str) -> str:
    """Return ``value`` if it is a string every backend can bind; else ``ValueError`` naming it.

    Refused: other types (``bytes`` included), NUL characters (PostgreSQL cannot hold them) and
    lone surrogates (not encodable as UTF-8).
    """
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name}: must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidArgumentError(f"{name}: must not contain NUL characters")
    _check_unicode(value, f"{name}:")
    return value


def check_iterable(value: Any, name: str, of: str = "strings") -> list[Any]:
    """Return the items of a list, set or other iterable; ``ValueError`` naming ``name`` else.

    A ``str`` is refused (it would be read as a set of letters), as are ``bytes`` and mappings
    (whose keys would be taken silently). ``of`` says what the items should be, for the message.
    """
    if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        raise InvalidArgumentError(
            f"{name}: must be a list, set or other iterable of {of}, got {type(value).__name__}"
        )
    return list(value)


def check_str_iterable(value: Any, name: str) -> list[str]:
    """Return the strings of an iterable (see ``check_iterable``), each checked by ``check_str``."""
    items = check_iterable(value, name)
    # 1,000 run ids at once (latest_progress): plain ASCII strings without NUL pass every
    # check of check_str, which three C-level passes tell; anything else is checked one by one.
    if all(type(item) is str for item in items):
        joined = "".join(items)
        if joined.isascii() and "\x00" not in joined:
            return items
    return [check_str(item, name) for item in items]


def check_int(value: Any, name: str, minimum: int, maximum: int = MAX_INT) -> int:
    """Return ``value`` if it is an ``int`` (not a bool) from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidArgumentError(
            f"{name}: must be an integer from {minimum} to {maximum}, got {value!r}"
        )
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is a ``bool``; else ``ValueError`` naming ``name``."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name}: must be True or False, got {value!r}")
    return value


def check_status(value: Any, name: str) -> RunStatus:
    """Return ``value`` as a ``RunStatus``; ``ValueError`` naming ``name`` for anything else."""
    if isinstance(value, str):
        try:
            return RunStatus(value)
        except ValueError:
            pass
    known = ", ".join(status.value for status in RunStatus)
    raise InvalidArgumentError(f"{name}: must be one of {known}, got {value!r}")


def check_statuses(value: Any, name: str) -> list[RunStatus]:
    """One status or an iterable of them, as a sorted list without repeats."""
    items = [value] if isinstance(value, str) else check_str_iterable(value, name)
    return sorted({check_status(item, name) for item in items})


def check_seconds(value: Any, name: str, *, allow_zero: bool) -> float | None:
    """``None`` or a finite number of seconds above 0 (or at least 0 with ``allow_zero``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name}: must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgumentError(
            f"{name}: must be {'≥' if allow_zero else '>'} 0 seconds, got {value!r}"
        )
    return float(value)


def check_seq_map(value: Any, name: str) -> dict[str, int]:
    """A mapping of run ids to seqs (integers ≥ 0), e.g. a follower's resume point; a seq past
    the largest a run can have (``MAX_SEQ``, the 32-bit column's limit) means "after all of
    them" and is clamped to it, so no statement ever binds a value its column cannot hold."""
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{name}: must map run ids to seqs, got {type(value).__name__}")
    checked: dict[str, int] = {}
    for run_id, seq in value.items():
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_INT:
            raise InvalidArgumentError(
                f"{name}: the seq of {run_id!r} must be an integer ≥ 0, got {seq!r}"
            )
        checked[check_str(run_id, name)] = min(seq, MAX_SEQ)
    return checked
