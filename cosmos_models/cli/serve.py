"""``cosmos-models serve``: the HTTP API (``cosmos_models.api``) under uvicorn."""

from typing import Annotated

import typer

from cosmos_models.cli.app import NOT_MIGRATED, DatabaseOption, app, describe, opened, out
from cosmos_models.db.migrate import check_schema
from cosmos_models.errors import CosmosModelsError, SchemaNotCurrentError


@app.command()
def serve(
    database: DatabaseOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Allow this browser origin (repeatable; default none)."),
    ] = None,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="The dashboard offers a cancel button (the cancel still needs a rw token).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API and its dashboard (open http://HOST:PORT/); writes need a token from
    COSMOS_API_TOKENS (rw:TOKEN,ro:TOKEN).

    The schema must be at head (run `cosmos-models db upgrade` first); without tokens the API
    is read-only. The dashboard is read-only unless --allow-actions.
    """
    try:
        import uvicorn

        from cosmos_models.api import create_app
    except ImportError:
        raise RuntimeError("the API needs its extra: pip install 'cosmos-models[api]'") from None
    # Checked here first, so that a database that is unreachable or not migrated is one line
    # on stderr (exit 1) rather than uvicorn's startup traceback.
    with opened(database, read_only=True) as db:
        try:
            check_schema(db)
        except SchemaNotCurrentError as exc:
            if exc.current is None:
                raise CosmosModelsError(f"{NOT_MIGRATED} ({describe(database)})") from None
            raise
    application = create_app(
        database, cors_origins=cors_origin or (), dashboard_actions=allow_actions
    )
    out.print(f"serving the cosmos_models API and dashboard on http://{host}:{port} (Ctrl+C stops)")
    # Open dashboards hold event streams: a stop waits this long for them, then ends them.
    uvicorn.run(application, host=host, port=port, log_level="info", timeout_graceful_shutdown=3)
