"""``cosmos-models demo``: sample prompts and runs, and simulated workers reporting progress."""

import random
import threading
from typing import Annotated

import typer

from cosmos_models.cli.app import (
    DatabaseOption,
    app,
    describe,
    literal,
    opened,
    out,
)
from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.errors import CosmosModelsError
from cosmos_models.models.prompt import PromptCreate
from cosmos_models.models.status import RunStatus
from cosmos_models.services.claims import claim_next_run
from cosmos_models.services.lifecycle import (
    create_prompt,
    create_run,
    heartbeat,
    transition,
)
from cosmos_models.services.queries import list_runs
from cosmos_models.services.tracking import record_progress

# -- demo -----------------------------------------------------------------------------------

DEMO_PROMPTS = [
    PromptCreate(
        model_type="transfer",
        prompt_text="cyberpunk city at night",
        inputs={"video": "/inputs/videos/city.mp4", "depth": "/inputs/depth/city_depth.mp4"},
        parameters={"num_steps": 35, "cfg_scale": 7.5},
    ),
    PromptCreate(
        model_type="reason",
        prompt_text="What happens next in this scene?",
        inputs={"video": "/outputs/result.mp4", "context": "urban environment"},
        parameters={"reasoning_depth": 3, "temperature": 0.7},
    ),
    PromptCreate(
        model_type="predict",
        prompt_text="Continue this animation",
        inputs={"frames": ["frame1.png", "frame2.png", "frame3.png"]},
        parameters={"prediction_length": 60, "fps": 30},
    ),
]
STAGES = (
    (RunStatus.UPLOADING, "uploading"),
    (RunStatus.RUNNING, "inference"),
    (RunStatus.DOWNLOADING, "downloading"),
)


def _demo_worker(
    db: DatabaseConnection,
    worker_id: str,
    step_seconds: float,
    stop: threading.Event,
    seed: int,
) -> None:
    rng = random.Random(seed)  # noqa: S311 - simulated failures, not secrets
    while not stop.is_set():
        run = claim_next_run(db, worker_id)
        if run is None:
            return
        for status, stage in STAGES:
            if run.status is not status:
                run = transition(db, run.id, status)
            for percentage in (0.0, 25.0, 50.0, 75.0, 100.0):
                if stop.wait(step_seconds):
                    transition(db, run.id, RunStatus.CANCELLED, error_message="demo stopped")
                    return
                record_progress(db, run.id, stage, percentage, f"{stage} {percentage:.0f}%")
                heartbeat(db, run.id, worker_id)
            if stage == "inference" and rng.random() < 0.2:
                transition(
                    db,
                    run.id,
                    RunStatus.FAILED,
                    error_message="simulated GPU out of memory",
                )
                break
        else:
            transition(db, run.id, RunStatus.COMPLETED)


@app.command("demo")
def demo(
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.5, help="About how long the simulated workers run.")
    ] = 60.0,
    runs_per_prompt: Annotated[int, typer.Option("--runs-per-prompt", min=1, max=20)] = 2,
    workers: Annotated[int, typer.Option("--workers", min=1, max=8)] = 3,
    database: DatabaseOption = None,
) -> None:
    """Add sample prompts and runs for the three model types, then simulate workers on them."""
    with opened(database) as db:
        db.create_tables()
        run_count = 0
        for prompt in DEMO_PROMPTS:
            stored = create_prompt(db, prompt)
            for _ in range(runs_per_prompt):
                create_run(
                    db,
                    {"prompt_id": stored.id, "execution_config": {"gpu_node": "demo-gpu"}},
                )
                run_count += 1
        where = describe(database)
        out.print(
            literal(f"added {len(DEMO_PROMPTS)} prompts and {run_count} pending runs to {where}")
        )
        # Each run goes through 3 stages of 5 steps; spread the runs over the workers and time.
        rounds = -(-run_count // workers)
        step = max(seconds / (rounds * 15), 0.01)
        out.print(f"{workers} simulated workers for about {seconds:.0f}s; try: cosmos-models watch")
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_demo_worker,
                args=(db, f"demo-worker-{i}", step, stop, i),
                daemon=True,
            )
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            stop.set()
            for thread in threads:
                thread.join()
        final = list_runs(db, limit=run_count).items
        counts: dict[str, int] = {}
        for run in final:
            counts[run.status.value] = counts.get(run.status.value, 0) + 1
        if not counts:
            raise CosmosModelsError("the demo runs disappeared")
        out.print(
            "done: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        )
