"""JsonFilter gives the answer of a plain-Python reference on every backend (a differential test).

The reference below is the semantics the README documents: a ``str`` path element only enters
objects and an ``int`` only arrays; a filter matches values of its own JSON type only; numbers
compare exactly as Python compares them (integers within 64 bits, doubles); strings compare
exactly, in code point order; ``== None`` matches a present null, ``!= None`` a present non-null.
"""

import math
import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from cosmos_models import DatabaseConnection, JsonFilter, PromptCreate, create_prompt, list_prompts
from cosmos_models.db.json_filters import INT64_MAX, INT64_MIN
from cosmos_models.db.tables import PROMPTS

# -- the reference ---------------------------------------------------------------------------

_MISSING = object()
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def lookup(document: Any, path: tuple[str | int, ...]) -> Any:
    """The value at ``path``, or ``_MISSING``: keys enter objects only, indexes arrays only."""
    value = document
    for key in path:
        if isinstance(key, str):
            if not isinstance(value, dict) or key not in value:
                return _MISSING
        elif not isinstance(value, list) or key >= len(value):
            return _MISSING
        value = value[key]
    return value


def reference_match(document: Any, condition: JsonFilter) -> bool:
    """Whether ``condition`` matches ``document``, by the documented semantics."""
    value = lookup(document, condition.path)
    wanted, op = condition.value, condition.op
    if value is _MISSING:
        return False
    if wanted is None:
        return (value is None) == (op == "==")
    if isinstance(wanted, bool):
        return isinstance(value, bool) and value == (wanted == (op == "=="))
    if isinstance(wanted, str):
        return isinstance(value, str) and _OPERATORS[op](value, wanted)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return False  # beyond what SQLite reads exactly: never a numeric match
    return _OPERATORS[op](value, wanted)


# -- generated documents and filters ---------------------------------------------------------

KEYS = [
    "a",
    "b",
    "0",
    "1",
    "a.b",
    "$",
    "-",
    "--",
    "-1",
    "\u00e9",
    "e\u0301",
    "e",
    "a ",
    " a",
    "A",
    "*",
]
INTS = [0, 1, -1, 7, 2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]
FLOATS = [0.7, 0.1, 0.30000000000000004, -0.0, 0.5, 7.0, 2.0**53, 2.0**63, 1e16, 1e300, 5e-324]
STRINGS = [
    "gpu-001",
    "gpu-001 ",
    "GPU-001",
    "\u00e9",
    "e\u0301",
    "e",
    "",
    " ",
    "a",
    "b",
    "ß",
    "ss",
    "🎬",
]

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=4)
keys = st.sampled_from(KEYS) | _text.filter(lambda key: not set(key) & set('"\\'))
scalars = st.one_of(
    st.sampled_from(INTS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(FLOATS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(STRINGS),
    _text,
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=8,
)
documents = st.dictionaries(keys, values, max_size=4)


def paths_in(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path inside ``value``, and each of them with its last step's kind switched."""
    found: list[tuple[str | int, ...]] = []
    items: list[tuple[str | int, Any]] = (
        list(value.items())
        if isinstance(value, dict)
        else list(enumerate(value))
        if isinstance(value, list)
        else []
    )
    for key, item in items:
        path = (*prefix, key)
        found.append(path)
        # The same step as the other kind: "0" where the index 0 is, 0 where the key "0" is.
        if isinstance(key, int):
            found.append((*prefix, str(key)))
        elif key.isdigit() and key.isascii():
            found.append((*prefix, int(key)))
        found.extend(paths_in(item, path))
    return found


def usable(path: tuple[str | int, ...]) -> bool:
    try:
        JsonFilter("parameters", path, "==", 1)
    except ValueError:
        return False
    return True


@st.composite
def filters_for(draw: st.DrawFn, docs: list[dict[str, Any]]) -> JsonFilter:
    paths = [path for doc in docs for path in paths_in(doc) if usable(path)]
    path = draw(st.sampled_from(paths) if paths else st.just(("a",)))
    found = [lookup(doc, path) for doc in docs]
    nearby = [
        value for value in found if value is not _MISSING and not isinstance(value, dict | list)
    ]
    value = draw(st.sampled_from(nearby) | scalars if nearby else scalars)
    ops = ["==", "!="] if value is None or isinstance(value, bool) else list(_OPERATORS)
    return JsonFilter("parameters", path, draw(st.sampled_from(ops)), value)


def _examples() -> int:
    # A fraction of the profile's count: each example writes and queries on a live backend.
    return max(10, settings().max_examples // 4)


def _store(db: DatabaseConnection, docs: list[dict[str, Any]]) -> list[str]:
    return [
        create_prompt(
            db, PromptCreate(model_type="m", prompt_text="p", inputs={}, parameters=doc)
        ).id
        for doc in docs
    ]


def _matching(db: DatabaseConnection, condition: JsonFilter) -> set[str]:
    return {prompt.id for prompt in list_prompts(db, json_filters=[condition], limit=100).items}


@settings(max_examples=_examples(), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), docs=st.lists(documents, min_size=1, max_size=5))
def test_filters_answer_as_the_reference_on_every_backend(
    db: DatabaseConnection, data: st.DataObject, docs: list[dict[str, Any]]
) -> None:
    ids = _store(db, docs)
    try:
        for condition in data.draw(st.lists(filters_for(docs), min_size=1, max_size=6)):
            expected = {
                pid for pid, doc in zip(ids, docs, strict=True) if reference_match(doc, condition)
            }
            assert _matching(db, condition) == expected, condition
    finally:
        with db.engine.begin() as connection:
            connection.execute(delete(PROMPTS))


# -- the cases of the issue, named -----------------------------------------------------------

DOCS: dict[str, dict[str, Any]] = {
    "point_seven": {"cfg": 0.7, "node": "gpu-001", "obj": {"0": "key"}, "arr": ["index"]},
    "padded": {"cfg": 0.70001, "node": "gpu-001 ", "-": 1, "$": "dollar", "a.b": "dotted"},
    "upper": {"cfg": 2**53 + 1, "node": "GPU-001", "big": 2**63, "huge": 2**64},
    "limits": {"cfg": 2**53, "node": "\u00e9", "big": 2**63 - 1, "list": [[1, 2], {"0": 3}]},
    "unicode": {"cfg": 9007199254740992.0, "node": "e\u0301", "big": -(2**63), "ключ": "ключ"},
}

CASES: list[tuple[tuple[str | int, ...], str, Any, set[str]]] = [
    (("cfg",), "==", 0.7, {"point_seven"}),  # not single precision
    (("cfg",), ">", 0.7, {"padded", "upper", "limits", "unicode"}),
    (("cfg",), "==", 2**53, {"limits", "unicode"}),  # the int and the double, both exact
    (("cfg",), "==", 2**53 + 1, {"upper"}),
    (("cfg",), ">", 2**53, {"upper"}),
    (("cfg",), "==", 9007199254740992.0, {"limits", "unicode"}),
    (("cfg",), "<", 2**53 + 1, {"point_seven", "padded", "limits", "unicode"}),
    (("node",), "==", "gpu-001", {"point_seven"}),  # no PAD SPACE, no case folding
    (("node",), "==", "gpu-001 ", {"padded"}),
    (("node",), "==", "\u00e9", {"limits"}),  # composed é is not e + combining accent
    (("node",), ">", "z", {"limits"}),  # code point order: é > z > e + accent
    (("obj", "0"), "==", "key", {"point_seven"}),
    (("obj", 0), "==", "key", set()),  # an index never reads an object's key "0"
    (("arr", 0), "==", "index", {"point_seven"}),
    (("arr", "0"), "==", "index", set()),  # a key never reads an array's index 0
    (("list", 1, "0"), "==", 3, {"limits"}),
    (("list", 0, 1), ">=", 2, {"limits"}),
    (("$",), "==", "dollar", {"padded"}),
    (("a.b",), "==", "dotted", {"padded"}),
    (("ключ",), "==", "ключ", {"unicode"}),
    (("big",), "==", 2**63 - 1, {"limits"}),
    (("big",), "==", -(2**63), {"unicode"}),
    (("big",), ">", 2**62, {"limits"}),  # 2**63 in a document is beyond 64 bits: no match
    (("big",), "<", 2**64, {"limits", "unicode"}),  # a filter value beyond 64 bits is fine
    (("big",), "==", 2**63, set()),
    (("huge",), "!=", 0, set()),
    (("cfg",), "<", 10**400, {"point_seven", "padded", "upper", "limits", "unicode"}),
    (("cfg",), ">", -(10**400), {"point_seven", "padded", "upper", "limits", "unicode"}),
    (("cfg",), "<", 2.5e300, {"point_seven", "padded", "upper", "limits", "unicode"}),
    (("cfg",), ">", 0.5, {"point_seven", "padded", "upper", "limits", "unicode"}),
]


@pytest.mark.parametrize(("path", "op", "value", "expected"), CASES)
def test_the_issues_cases_mean_the_same_everywhere(
    db: DatabaseConnection,
    path: tuple[str | int, ...],
    op: Any,
    value: Any,
    expected: set[str],
) -> None:
    names = dict(zip(_store(db, list(DOCS.values())), DOCS, strict=True))
    condition = JsonFilter("parameters", path, op, value)
    assert {names[pid] for pid in _matching(db, condition)} == expected
    # The reference agrees, so the differential test checks the same semantics.
    assert {name for name, doc in DOCS.items() if reference_match(doc, condition)} == expected


@pytest.mark.parametrize("key", ["-", "--", "-1", "-x"])
def test_keys_mariadb_cannot_look_up_are_refused_naming_the_path(key: str) -> None:
    with pytest.raises(ValueError, match=r"path: key .* starts with '-'"):
        JsonFilter("parameters", (key,), "==", 1)
    assert JsonFilter("parameters", (f"a{key}",), "==", 1).path == (f"a{key}",)


@pytest.mark.parametrize("number", [2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 2**53 + 1])
def test_big_integers_round_trip_exactly(db: DatabaseConnection, number: int) -> None:
    stored = create_prompt(
        db, PromptCreate(model_type="m", prompt_text="p", inputs={"n": number}, parameters={})
    )
    (read,) = list_prompts(db).items
    assert read.inputs["n"] == number
    assert type(read.inputs["n"]) is int
    assert read.id == stored.id


def test_reference_lookup_is_strict_about_kinds() -> None:
    assert lookup({"0": 1}, (0,)) is _MISSING
    assert lookup([1], ("0",)) is _MISSING
    assert lookup({"a": [1, 2]}, ("a", 5)) is _MISSING
    assert math.isclose(lookup({"a": [1, 2.5]}, ("a", 1)), 2.5)
