"""Access control over real HTTP on every backend: writes need a read-write token.

Every write route is tried without a token, with a wrong one and with a read-only one: 401, 401,
403, and nothing written. Tokens are kept hashed and compared in constant time.
"""

import hashlib
import hmac
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import Request

from cosmos_models import DatabaseConnection, InvalidArgumentError, create_run, list_runs
from cosmos_models.api import Access, TokenStore, create_app
from cosmos_models.db.migrate import upgrade
from cosmos_models.db.tables import PROGRESS, PROMPTS, RUNS
from tests.api_server import READER, TOKENS, WRITER, serving
from tests.databases import URL_BACKENDS, fresh_url
from tests.factories import new_prompt

PROMPT = {"model_type": "t", "prompt_text": "x", "inputs": {}, "parameters": {}}

# Every write route with a request that would succeed with a read-write token.
WRITES: dict[tuple[str, str], Any] = {
    ("POST", "/prompts"): lambda p, r: ("/prompts", PROMPT),
    ("PATCH", "/prompts/{prompt_id}"): lambda p, r: (f"/prompts/{p}", {"prompt_text": "y"}),
    ("DELETE", "/prompts/{prompt_id}"): lambda p, r: (f"/prompts/{p}", None),
    ("POST", "/runs"): lambda p, r: ("/runs", {"prompt_id": p}),
    ("POST", "/runs/{run_id}/transition"): lambda p, r: (
        f"/runs/{r}/transition",
        {"to": "running"},
    ),
    ("POST", "/runs/{run_id}/cancel"): lambda p, r: (f"/runs/{r}/cancel", None),
    ("DELETE", "/runs/{run_id}"): lambda p, r: (f"/runs/{r}", None),
    ("POST", "/runs/{run_id}/progress"): lambda p, r: (
        f"/runs/{r}/progress",
        {"stage": "s", "percentage": 1},
    ),
    ("POST", "/progress"): lambda p, r: (
        "/progress",
        [{"run_id": r, "stage": "s", "percentage": 1}],
    ),
}


def snapshot(db: DatabaseConnection) -> list[Any]:
    with db.connect(read_only=True) as connection:
        return [connection.execute(table.select()).all() for table in (PROMPTS, RUNS, PROGRESS)]


@pytest.fixture(params=URL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    with fresh_url(str(request.param), tmp_path) as url:
        upgrade(url, report=lambda _: None)
        yield url


def test_the_matrix_covers_every_write_route() -> None:
    app = create_app("sqlite://", tokens="")
    writes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method != "get"
    }
    assert writes == set(WRITES)


def test_every_write_refuses_missing_wrong_and_read_only_tokens(url: str) -> None:
    with DatabaseConnection(url) as db, serving(create_app(url, tokens=TOKENS)) as base:
        prompt_id = new_prompt(db)
        run_id = create_run(db, prompt_id).id
        before = snapshot(db)
        wrong = WRITER[:-1] + ("x" if WRITER[-1] != "x" else "y")  # all but the last character
        for (method, _), make in WRITES.items():
            path, body = make(prompt_id, run_id)
            for headers, status in (
                ({}, 401),
                ({"Authorization": f"Bearer {wrong}"}, 401),
                ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
                ({"Authorization": f"Bearer {READER}"}, 403),
            ):
                response = httpx.request(method, base + path, json=body, headers=headers)
                assert response.status_code == status, (method, path, headers, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert WRITER not in response.text
                assert READER not in response.text
                if status == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
        assert snapshot(db) == before
        # Reads need no token; the writer's token writes.
        assert httpx.get(f"{base}/runs/{run_id}").status_code == 200
        ok = httpx.post(
            f"{base}/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {WRITER}"}
        )
        assert ok.status_code == 200


def test_without_tokens_the_api_is_read_only_and_says_so(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "cosmos_models.api"),
        DatabaseConnection(url) as db,
        serving(create_app(url, tokens="")) as base,
    ):
        prompt_id = new_prompt(db)
        assert "read-only" in caplog.text
        health = httpx.get(f"{base}/health").json()
        assert health["read_only"] is True
        refused = httpx.post(f"{base}/runs", json={"prompt_id": prompt_id})
        assert refused.status_code == 403
        assert "read-only" in refused.json()["detail"]
        assert list_runs(db).items == []


def test_a_host_dependency_decides_instead_of_tokens(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def host_auth(request: Request) -> Access:
        return Access.WRITE if request.headers.get("x-user") == "admin" else Access.READ

    with DatabaseConnection(url) as db, serving(create_app(url, auth=host_auth)) as base:
        prompt_id = new_prompt(db)
        assert httpx.get(f"{base}/health").json()["read_only"] is False
        refused = httpx.post(f"{base}/runs", json={"prompt_id": prompt_id})
        assert refused.status_code == 403
        created = httpx.post(
            f"{base}/runs", json={"prompt_id": prompt_id}, headers={"x-user": "admin"}
        )
        assert created.status_code == 201
        assert len(list_runs(db).items) == 1
    assert "read-only" not in caplog.text  # the host decides: not announced as read-only


def test_tokens_are_kept_hashed_and_compared_without_early_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = TokenStore.parse(TOKENS + ",ro:another-reader-token-000000")
    assert WRITER.encode() not in repr(store).encode()
    assert all(len(digest) == 32 for digest, _ in store.entries)
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    # A guess sharing all but one character with a real token, one sharing nothing, the token
    # itself: each costs one hash and one comparison of fixed-size digests per stored token.
    for guess, expected in (
        (WRITER[:-1] + "?", None),
        ("z" * 3, None),
        (WRITER, Access.WRITE),
        (READER, Access.READ),
    ):
        compared.clear()
        assert store.access_of(guess) is expected
        assert len(compared) == len(store.entries)
        assert all(len(a) == len(b) == 32 for a, b in compared)
        assert compared[0][0] == hashlib.sha256(guess.encode()).digest()


@pytest.mark.parametrize(
    "text", ["rw", "rw:short", "admin:0123456789abcdefgh", "rw:0123456789abcdef,xx"]
)
def test_a_bad_token_list_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="COSMOS_API_TOKENS: entry") as caught:
        TokenStore.parse(text)
    assert "0123456789abcdef" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ["ro:0123456789abcdef,rw:0123456789abcdef", "rw:0123456789abcdef, rw:0123456789abcdef"],
)
def test_a_token_listed_twice_is_refused_naming_the_entries_not_the_token(text: str) -> None:
    # Listed as ro and as rw, it was granted write access without a word.
    with pytest.raises(InvalidArgumentError, match="entries 1 and 2 hold the same token") as caught:
        TokenStore.parse(text)
    assert "0123456789abcdef" not in str(caught.value)


def test_wrong_options_are_refused_when_the_app_is_made() -> None:
    with pytest.raises(InvalidArgumentError, match="COSMOS_API_TOKENS: must be a string"):
        create_app("sqlite://", tokens=b"rw:0123456789abcdef")  # type: ignore[arg-type]
    for keepalive in (0, -1.0, float("nan"), "5", None):
        with pytest.raises(InvalidArgumentError, match="keepalive"):
            create_app("sqlite://", keepalive=keepalive)  # type: ignore[arg-type]
