"""Values every backend stores exactly: text without NUL or lone surrogates, JSON documents
within MariaDB's nesting limit and Python's integer limit, and the one JSON serializer.

Plain functions with no column or model knowledge; ``types.py`` builds the pydantic field types
and the column types on them.
"""

import json
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cosmos_models.errors import InvalidArgumentError

# MariaDB's JSON_VALID refuses documents nested deeper than 32 levels (a scalar counts as one),
# so containers may nest 31 deep, the top-level object included. Checked on every backend.
MAX_JSON_DEPTH = 31
# About 4,200 digits: Python refuses to print or parse longer integers (int_max_str_digits), so
# a longer one could be neither serialized nor read back.
MAX_JSON_INT_BITS = 14_000


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise InvalidArgumentError("must not contain NUL characters")
    if not value.isascii():  # the common case skips a call: this runs for every text of a batch
        _check_unicode(value, "text")
    return value


def _check_unicode(value: str, what: str) -> None:
    # A lone surrogate (from a bad decode or a JSON "\ud800" escape) cannot be encoded as UTF-8:
    # every driver fails on it at insert time, so it is refused here, naming the field.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(f"{what} must be valid Unicode (lone surrogate)") from None


def _check_required_text(value: str) -> str:
    if not value.strip():
        raise InvalidArgumentError("must not be empty or whitespace")
    # _check_text's checks, inlined: a call per field per event is a tenth of batch ingest.
    if "\x00" in value or not value.isascii():
        _check_text(value)
    return value


def _check_json_string(value: str, where: str) -> None:
    if "\x00" in value:
        raise InvalidArgumentError(f"{where}: strings must not contain NUL characters")
    _check_unicode(value, f"{where}: strings")


def check_json_value(value: Any, where: str = "value", depth: int = 0) -> None:
    """Raise ``ValueError`` unless ``value`` is plain JSON that every backend stores exactly.

    Accepted: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``, finite ``float``, ``bool``
    and ``None`` (subclasses too), nested at most ``MAX_JSON_DEPTH`` containers deep.
    """
    plain_json(value, where, depth)


def plain_json(value: Any, where: str = "value", depth: int = 0) -> Any:
    """Return ``value`` checked as ``check_json_value`` does, with subclasses made plain.

    A ``float``, ``int`` or ``str`` subclass (numpy's ``float64``, an ``IntEnum``, a ``StrEnum``)
    becomes its plain value, so that what is stored is the value, never a subclass's ``repr``.
    ``value`` itself is returned when nothing needed changing (callers test identity). Raises
    ``ValueError`` naming the path of the first bad value.
    """
    kind = type(value)
    if kind is str:
        _check_json_string(value, where)
    elif kind is float:
        if not math.isfinite(value):
            raise InvalidArgumentError(
                f"{where}: {value!r} is not valid JSON (NaN and infinity are not)"
            )
    elif kind is int:
        if value.bit_length() > MAX_JSON_INT_BITS:
            raise InvalidArgumentError(
                f"{where}: integer too large to store ({value.bit_length()} bits)"
            )
    elif isinstance(value, dict | list):
        return _plain_container(value, where, depth)
    elif not (value is None or kind is bool):
        return _plain_subclass(value, where, depth)
    return value


def _plain_container(value: dict[Any, Any] | list[Any], where: str, depth: int) -> Any:
    if depth + 1 > MAX_JSON_DEPTH:
        raise InvalidArgumentError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, list):
        items = [
            plain_json(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)
        ]
        unchanged = all(new is old for new, old in zip(items, value, strict=True))
        return value if unchanged else items
    changed = False
    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(
                f"{where}: object keys must be strings, got {type(key).__name__}"
            )
        plain_key = key if type(key) is str else str.__str__(key)
        _check_json_string(plain_key, where)
        new = plain_json(item, f"{where}.{plain_key}", depth + 1)
        changed = changed or new is not item or plain_key is not key
        result[plain_key] = new
    return result if changed else value


def _plain_subclass(value: Any, where: str, depth: int) -> Any:
    # bool cannot be subclassed; int subclasses are IntEnum and the like.
    if isinstance(value, int):
        return plain_json(int.__int__(value), where, depth)
    if isinstance(value, float):
        return plain_json(float.__float__(value), where, depth)
    if isinstance(value, str):
        return plain_json(str.__str__(value), where, depth)
    raise InvalidArgumentError(f"{where}: {type(value).__name__} is not JSON-serializable")


def _float_text(value: float) -> str:
    # Positional notation with a fractional part: PostgreSQL's JSONB keeps numbers as exact
    # decimals and prints them back as written, so 1e16 stored as "1e+16" would come back as the
    # integer 10000000000000000. "10000000000000000.0" comes back as the same float.
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{value!r} is not valid JSON")
    # float.__repr__, not repr(): a subclass's repr (numpy 2: "np.float64(7.5)") is not a number.
    text = format(Decimal(float.__repr__(value)), "f")
    return text if "." in text else f"{text}.0"


def dumps_json(value: Any) -> str:
    """Serialize checked JSON so that it reads back exactly on every backend (floats included)."""
    parts: list[str] = []
    _encode(value, parts.append)
    return "".join(parts)


def _encode(value: Any, out: Callable[[str], None]) -> None:
    if isinstance(value, str):
        out(json.dumps(value, ensure_ascii=False))
    elif value is None or isinstance(value, bool):
        out("null" if value is None else "true" if value else "false")
    elif isinstance(value, int):
        out(int.__repr__(value))  # an IntEnum's str() may be its name
    elif isinstance(value, float):
        out(_float_text(value))
    elif isinstance(value, dict):
        out("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):  # json.dumps would write {0: …}, which is not JSON
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
            out(("," if index else "") + json.dumps(key, ensure_ascii=False) + ":")
            _encode(item, out)
        out("}")
    elif isinstance(value, list | tuple):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _encode(item, out)
        out("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = plain_json(value, "value")
    return checked
