"""Listings with keyset pagination and JSON filters, run details and JSON Schemas, everywhere."""

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmos_models import (
    DatabaseConnection,
    InvalidArgumentError,
    JsonFilter,
    RunCreate,
    RunNotFoundError,
    api_json_schemas,
    claim_next_run,
    create_prompt,
    create_run,
    get_run,
    get_run_detail,
    latest_progress,
    list_prompts,
    list_runs,
    record_progress,
    transition,
)
from cosmos_models.services.queries import decode_cursor, encode_cursor
from tests.factories import T0, at


def new_prompt(
    db: DatabaseConnection,
    seconds: float = 0,
    *,
    model_type: str = "transfer",
    inputs: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
) -> str:
    data = {
        "model_type": model_type,
        "prompt_text": "cyberpunk city at night",
        "inputs": {"video": "/inputs/city.mp4"} if inputs is None else inputs,
        "parameters": {"num_steps": 35} if parameters is None else parameters,
    }
    return create_prompt(db, data, now=at(seconds)).id


def all_pages(fetch: Any, db: DatabaseConnection, **kwargs: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = fetch(db, cursor=cursor, **kwargs)
        pages.append([item.id for item in page.items])
        cursor = page.next_cursor
        if cursor is None:
            return pages


# -- pagination --------------------------------------------------------------------------------


def test_list_runs_pages_newest_first_with_ties_broken_by_id(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    ids = []
    for index in range(7):
        # Pairs share a created_at: the id decides, so no row is lost or repeated across pages.
        run = RunCreate(id=f"rs_{index}", prompt_id=prompt_id)
        ids.append(create_run(db, run, now=at(index // 2)).id)
    expected = sorted(ids, key=lambda run_id: (int(run_id[3:]) // 2, run_id), reverse=True)
    assert all_pages(list_runs, db, limit=3) == [expected[:3], expected[3:6], expected[6:]]
    oldest_first = [
        run_id for page in all_pages(list_runs, db, limit=3, order="oldest") for run_id in page
    ]
    assert oldest_first == expected[::-1]
    assert list_runs(db, limit=7).next_cursor is None


def test_pages_are_stable_while_rows_are_inserted(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    ids = [create_run(db, prompt_id, now=at(index)).id for index in range(6)]
    first = list_runs(db, limit=3)
    newer = create_run(db, prompt_id, now=at(100)).id  # lands before page one: never seen here
    second = list_runs(db, limit=3, cursor=first.next_cursor)
    seen = [run.id for run in first.items + second.items]
    assert seen == ids[::-1]
    assert newer not in seen
    assert second.next_cursor is None


def test_list_runs_filters(db: DatabaseConnection) -> None:
    first_prompt = new_prompt(db, model_type="transfer")
    other_prompt = new_prompt(db, model_type="reason")
    old = create_run(db, first_prompt, now=at(0)).id
    mid = create_run(db, first_prompt, now=at(10)).id
    new = create_run(db, other_prompt, now=at(20)).id
    claim_next_run(db, "w", now=at(30))  # old → uploading
    transition(db, mid, "cancelled")

    def ids(**kwargs: Any) -> list[str]:
        return [run.id for run in list_runs(db, **kwargs).items]

    assert ids(status="pending") == [new]
    assert ids(status=["uploading", "cancelled"]) == [mid, old]
    assert ids(model_type="transfer") == [mid, old]
    assert ids(prompt_id=other_prompt) == [new]
    assert ids(created_after=at(10)) == [new, mid]  # inclusive
    assert ids(created_before=at(10)) == [old]  # exclusive
    tokyo = timezone(timedelta(hours=9))
    assert ids(created_after=at(10).astimezone(tokyo), created_before=at(11)) == [mid]
    assert ids(status="failed") == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"status": "exploded"}, "status"),
        ({"created_after": datetime(2025, 1, 1)}, "created_after"),
        ({"created_before": datetime(2025, 1, 1)}, "created_before"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": True}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"[1, 2]").decode()}, "cursor"),
        ({"cursor": encode_cursor("prompts", "newest", T0, "ps_1")}, "cursor"),
        ({"cursor": encode_cursor("runs", "oldest", T0, "rs_1")}, "cursor"),
        ({"json_filters": ["parameters.num_steps >= 35"]}, "json_filters"),
        ({"json_filters": [JsonFilter("inputs", ("video",), "==", "x")]}, "column"),
    ],
)
def test_list_runs_refuses_bad_arguments_naming_them(
    db: DatabaseConnection, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        list_runs(db, **kwargs)


@pytest.mark.parametrize(
    "document",
    [
        {"k": "runs", "o": "newest", "t": "2025-01-04T12:00:00", "i": "rs_1"},  # naive
        {"k": "runs", "o": "newest", "t": "yesterday", "i": "rs_1"},
        {"k": "runs", "o": "newest", "t": "2025-01-04T12:00:00+00:00", "i": 5},
        {"k": "runs", "o": "newest"},
    ],
)
def test_tampered_cursors_are_refused(document: dict[str, Any]) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(document).encode()).decode()
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(cursor, "runs", "newest")


def _forged(row_id: str) -> str:
    document = {"k": "runs", "o": "newest", "t": "2026-11-28T15:55:15+00:00", "i": row_id}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@pytest.mark.parametrize("row_id", ["\ud800", "a\x00b"], ids=["lone surrogate", "NUL"])
def test_a_forged_cursor_id_no_backend_can_bind_is_refused_naming_the_cursor(
    db: DatabaseConnection, row_id: str
) -> None:
    # Was a UnicodeEncodeError (500 over HTTP) for the surrogate on every backend, and a
    # DatabaseError (503) for NUL on PostgreSQL.
    with pytest.raises(InvalidArgumentError, match=r"^cursor: .* \(id: "):
        list_runs(db, cursor=_forged(row_id))


def test_a_cursor_error_does_not_echo_the_decoders_message() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        decode_cursor("gQ", "runs", "newest")  # base64 of 0x81: not UTF-8
    assert str(raised.value) == "cursor: not a cursor returned by list_runs with order='newest'"


def test_cursor_round_trip() -> None:
    cursor = encode_cursor("runs", "newest", at(1.5), "rs_x")
    assert cursor.isascii()
    assert "=" not in cursor
    assert decode_cursor(cursor, "runs", "newest") == (at(1.5), "rs_x")


def test_list_prompts_pages_and_filters(db: DatabaseConnection) -> None:
    ids = [
        new_prompt(db, index, model_type="reason" if index % 2 else "transfer")
        for index in range(5)
    ]
    assert all_pages(list_prompts, db, limit=2) == [ids[:2:-1], ids[2:0:-1], ids[:1]]
    page = list_prompts(db, model_type="reason", created_after=at(1), created_before=at(4))
    assert [prompt.id for prompt in page.items] == [ids[3], ids[1]]
    assert page.items[0].parameters == {"num_steps": 35}
    with pytest.raises(ValueError, match="column"):
        list_prompts(db, json_filters=[JsonFilter("outputs", ("x",), "==", 1)])


# -- JSON filters ------------------------------------------------------------------------------

DOCUMENTS: dict[str, dict[str, Any]] = {
    "steps_35": {"num_steps": 35, "cfg": 7.5, "name": "Alpha", "flag": True, "none": None},
    "steps_50": {
        "num_steps": 50,
        "cfg": 2,
        "name": "alpha",
        "flag": False,
        "nested": {"a": [1, 2]},
    },
    "steps_text": {"num_steps": "35", "name": "beta", "flag": "true", "none": "null"},
    "empty": {},
}


@pytest.fixture
def documents(db: DatabaseConnection) -> dict[str, str]:
    """One prompt per document in DOCUMENTS (as parameters), by name."""
    return {
        name: new_prompt(db, index, parameters=document)
        for index, (name, document) in enumerate(DOCUMENTS.items())
    }


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        (("num_steps",), ">=", 35, {"steps_35", "steps_50"}),
        (("num_steps",), ">", 35, {"steps_50"}),
        (("num_steps",), "==", 35, {"steps_35"}),  # the string "35" is not the number 35
        (("num_steps",), "==", 35.0, {"steps_35"}),
        (("num_steps",), "!=", 35, {"steps_50"}),  # missing keys and strings never match
        (("num_steps",), "==", "35", {"steps_text"}),
        (("cfg",), "<", 7.5, {"steps_50"}),
        (("cfg",), "<=", 7.5, {"steps_35", "steps_50"}),
        (("name",), "==", "alpha", {"steps_50"}),  # case matters on every backend
        (("name",), "<", "alpha", {"steps_35"}),  # byte order: "A" < "a"
        (("name",), ">=", "alpha", {"steps_50", "steps_text"}),
        (("flag",), "==", True, {"steps_35"}),
        (("flag",), "==", False, {"steps_50"}),
        (("flag",), "!=", True, {"steps_50"}),
        (("flag",), "!=", False, {"steps_35"}),
        (("none",), "==", None, {"steps_35"}),
        (("none",), "!=", None, {"steps_text"}),
        (("nested", "a", 1), "==", 2, {"steps_50"}),
        (("nested", "a", 5), "==", 2, set()),
        (("missing",), "!=", "x", set()),
    ],
)
def test_json_filters_mean_the_same_on_every_backend(
    db: DatabaseConnection,
    documents: dict[str, str],
    path: tuple[str | int, ...],
    op: Any,
    value: Any,
    expected: set[str],
) -> None:
    page = list_prompts(db, json_filters=[JsonFilter("parameters", path, op, value)])
    names = {
        name for name, prompt_id in documents.items() if prompt_id in {p.id for p in page.items}
    }
    assert names == expected


def test_json_filters_combine_and_apply_to_runs(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    a100 = create_run(db, {"prompt_id": prompt_id, "execution_config": {"gpu": "a100", "n": 2}}).id
    create_run(db, {"prompt_id": prompt_id, "execution_config": {"gpu": "a100", "n": 1}})
    tagged = create_run(db, {"prompt_id": prompt_id, "run_metadata": {"tag": "nightly"}}).id
    both = [
        JsonFilter("execution_config", ("gpu",), "==", "a100"),
        JsonFilter("execution_config", ("n",), ">", 1),
    ]
    assert [run.id for run in list_runs(db, json_filters=both).items] == [a100]
    meta = [JsonFilter("run_metadata", ("tag",), "==", "nightly")]
    assert [run.id for run in list_runs(db, json_filters=meta).items] == [tagged]


INJECTIONS = [
    "x' OR '1'='1",
    "a'); DROP TABLE runs; --",
    "$.video",
    "a.b",
    "key with spaces",
    "*",
    "[0]",
    "ключ",
    "🎬",
    "{}",
]


@pytest.mark.parametrize("key", INJECTIONS)
def test_keys_and_values_cannot_inject(db: DatabaseConnection, key: str) -> None:
    hostile = new_prompt(db, 0, inputs={key: key, "video": "/inputs/city.mp4"})
    new_prompt(db, 1, inputs={"video": "/inputs/other.mp4"})
    by_key = list_prompts(db, json_filters=[JsonFilter("inputs", (key,), "==", key)])
    assert [p.id for p in by_key.items] == [hostile]
    by_value = list_prompts(db, json_filters=[JsonFilter("inputs", ("video",), "==", key)])
    assert by_value.items == []
    assert len(list_runs(db).items) == 0  # the runs table is still there
    assert len(list_prompts(db).items) == 2


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (("inputs", (), "==", 1), "path"),
        (("inputs", ("a",) * 17, "==", 1), "path"),
        (("inputs", ("",), "==", 1), "path"),
        (("inputs", ('say "hi"',), "==", 1), "path"),
        (("inputs", ("back\\slash",), "==", 1), "path"),
        (("inputs", ("line\nbreak",), "==", 1), "path"),
        (("inputs", ("x" * 256,), "==", 1), "path"),
        (("inputs", (-1,), "==", 1), "path"),
        (("inputs", (True,), "==", 1), "path"),
        (("inputs", (1.5,), "==", 1), "path"),
        (("inputs", ("a",), "LIKE", 1), "op"),
        (("inputs", ("a",), "; DROP", 1), "op"),
        (("inputs", ("a",), ">", None), "op"),
        (("inputs", ("a",), "<", True), "op"),
        (("inputs", ("a",), "==", float("nan")), "value"),
        (("inputs", ("a",), "==", [1]), "value"),
        (("inputs", ("a",), "==", {"a": 1}), "value"),
        (("inputs", ("a",), "==", "nul\x00"), "value"),
    ],
)
def test_json_filters_refuse_bad_parts_naming_them(arguments: tuple[Any, ...], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        JsonFilter(*arguments)


def test_a_single_key_may_be_given_without_a_tuple() -> None:
    assert JsonFilter("inputs", "video", "==", "x").path == ("video",)  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=40))
def test_every_key_is_either_refused_or_kept_verbatim(key: str) -> None:
    refused = key.startswith("-") or any(
        ch in '"\\' or ord(ch) < 32 or ord(ch) == 127 for ch in key
    )
    if refused:
        with pytest.raises(ValueError, match="path"):
            JsonFilter("inputs", (key,), "==", 1)
    else:
        assert JsonFilter("inputs", (key,), "==", 1).path == (key,)


# -- details and JSON --------------------------------------------------------------------------


def test_run_detail_has_the_prompt_summary_and_latest_progress(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db, 0, model_type="predict")
    run_id = create_run(db, prompt_id, now=at(1)).id
    detail = get_run_detail(db, run_id)
    assert (detail.id, detail.prompt.id, detail.prompt.model_type) == (run_id, prompt_id, "predict")
    assert detail.latest_progress is None
    claim_next_run(db, "w", now=at(2))
    record_progress(db, run_id, "uploading", 5, timestamp=at(3))
    record_progress(db, run_id, "inference", 60, timestamp=at(4))
    detail = get_run_detail(db, run_id)
    assert detail.latest_progress is not None
    assert detail.latest_progress.stage == "inference"
    # Read from the run's own row: the same event, field for field, as latest_progress gives.
    assert detail.latest_progress == latest_progress(db, [run_id])[run_id]
    assert detail.latest_progress.timestamp == at(4)
    assert (detail.worker_id, detail.prompt.prompt_text) == ("w", "cyberpunk city at night")
    with pytest.raises(RunNotFoundError):
        get_run_detail(db, "rs_missing")
    with pytest.raises(RunNotFoundError):
        get_run(db, "rs_missing")


def test_json_dumps_have_utc_timestamps(db: DatabaseConnection) -> None:
    run_id = create_run(db, new_prompt(db), now=at(0)).id
    claim_next_run(db, "w", now=at(1.25))
    record_progress(db, run_id, "uploading", 5, timestamp=at(2))
    dumped = get_run_detail(db, run_id).model_dump(mode="json")
    stamps = [
        dumped["created_at"],
        dumped["updated_at"],
        dumped["started_at"],
        dumped["heartbeat_at"],
        dumped["prompt"]["created_at"],
        dumped["latest_progress"]["timestamp"],
    ]
    for stamp in stamps:
        assert stamp.endswith(("Z", "+00:00")), stamp
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert dumped["started_at"] == "2025-01-04T12:00:01.250000Z"
    assert dumped["completed_at"] is None
    page = list_runs(db).model_dump(mode="json")
    assert page["items"][0]["created_at"].endswith(("Z", "+00:00"))


def test_json_schemas_of_every_api_model() -> None:
    schemas = api_json_schemas()
    assert set(schemas) >= {
        "PromptCreate",
        "PromptUpdate",
        "PromptRead",
        "RunCreate",
        "RunRead",
        "RunDetail",
        "ProgressCreate",
        "ProgressRead",
        "PromptSummary",
        "Page[RunRead]",
        "Page[PromptRead]",
    }
    json.dumps(schemas)  # plain JSON
    assert "model_type" not in schemas["RunCreate"]["required"]
    assert set(schemas["ProgressCreate"]["required"]) == {"run_id", "stage", "percentage"}
    assert "latest_progress" in schemas["RunDetail"]["properties"]
    assert schemas["RunRead"]["properties"]["created_at"]["format"] == "date-time"
