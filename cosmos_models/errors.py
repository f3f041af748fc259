"""The few exception types callers catch.

Every client error is a ``CosmosModelsError``: a wrong argument is an ``InvalidArgumentError``
(also a ``ValueError``) naming it. Fields of the Create/Update models are validated by pydantic,
whose ``ValidationError`` (also a ``ValueError``) lists each field's location; pydantic cannot
raise a subclass of ours, so an API maps both to 422 (see ``cosmos_models.api``). The rest is
for what happens in, or because of, the database.
"""

from sqlalchemy.exc import SQLAlchemyError


class CosmosModelsError(Exception):
    """Base class of every error this package raises on its own account."""


class InvalidArgumentError(CosmosModelsError, ValueError):
    """An argument has the wrong type or value; the message names it (``name: problem``).

    Also a ``ValueError``, so code written as ``except ValueError:`` still catches it.
    """


class DatabaseError(CosmosModelsError, SQLAlchemyError):
    """A database or driver error, translated so that its text is one line without a secret.

    Also a ``sqlalchemy.exc.SQLAlchemyError``: code written against the earlier implementation
    (``except SQLAlchemyError:``) still catches it.
    """

    def __str__(self) -> str:
        # SQLAlchemyError's own __str__ appends a "Background on this error" link when a code
        # is set; ours never sets one, and the message stays exactly what was given.
        return Exception.__str__(self)


class IntegrityViolation(DatabaseError):
    """The database refused a write: a foreign key, NOT NULL, CHECK or unique rule."""


class ValueTooLargeError(DatabaseError, InvalidArgumentError):
    """A statement's values are larger than the server takes in one packet (MariaDB/MySQL
    ``max_allowed_packet``, 16 MB by default): nothing was written, and retrying cannot help.

    A ``DatabaseError`` (the server refused it) and an ``InvalidArgumentError`` (the caller's
    value is the cause; HTTP 422).
    """


class CommitUnknownError(DatabaseError):
    """The connection was lost during COMMIT: the transaction may or may not have been applied.

    Never retry such a write blindly: check whether it took effect first (a failover, a server
    restart or a network cut between the commit and its acknowledgement).
    """


class MigrationError(CosmosModelsError):
    """A schema migration could not be applied; the message names the revision and why."""


class SchemaNotCurrentError(MigrationError):
    """The database is not at the package's newest revision (``check_schema``).

    ``current`` is the database's revision (None: never migrated), ``head`` the package's.
    """

    def __init__(self, current: str | None, head: str) -> None:
        at = "not migrated (no revision)" if current is None else f"at revision {current!r}"
        super().__init__(
            f"the database is {at}, not at {head!r}: run `cosmos-models db upgrade` "
            "(or `make migrate`) once before starting the app"
        )
        self.current = current
        self.head = head


class NotFoundError(CosmosModelsError, LookupError):
    """A row the caller named does not exist (also a ``LookupError``)."""


class PromptNotFoundError(NotFoundError):
    """No prompt has the given id."""

    def __init__(self, prompt_id: str) -> None:
        super().__init__(f"prompt {prompt_id!r} does not exist")
        self.prompt_id = prompt_id


class RunNotFoundError(NotFoundError):
    """No run has the given id (``run_ids`` lists every missing id when there were several)."""

    def __init__(self, run_ids: str | list[str]) -> None:
        missing = [run_ids] if isinstance(run_ids, str) else sorted(run_ids)
        names = ", ".join(repr(run_id) for run_id in missing)
        super().__init__(
            f"run {names} does not exist" if len(missing) == 1 else f"runs {names} do not exist"
        )
        self.run_ids = missing
        self.run_id = missing[0]


class InvalidTransitionError(CosmosModelsError):
    """The lifecycle does not allow a run to move from one status to another."""

    def __init__(self, run_id: str, from_status: str, to_status: str) -> None:
        super().__init__(f"run {run_id!r} cannot move from {from_status!r} to {to_status!r}")
        self.run_id = run_id
        self.from_status = from_status
        self.to_status = to_status


class TransitionConflictError(CosmosModelsError):
    """Another writer changed the run's status first (a lost compare-and-set race)."""

    def __init__(self, run_id: str, expected: str, current: str, to_status: str) -> None:
        super().__init__(
            f"run {run_id!r} was expected in {expected!r} to move to {to_status!r}, "
            f"but is now {current!r}"
        )
        self.run_id = run_id
        self.expected = expected
        self.current = current
        self.to_status = to_status


class RunFinishedError(CosmosModelsError):
    """The run is completed, failed or cancelled: it takes no more progress or heartbeats."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} is already {status!r}; it takes no more updates")
        self.run_id = run_id
        self.status = status


class WorkerMismatchError(CosmosModelsError):
    """A worker acted on a run that it does not hold (another worker holds it, or none does)."""

    def __init__(self, run_id: str, worker_id: str, holder: str | None) -> None:
        held = f"held by worker {holder!r}" if holder else "not held by any worker"
        super().__init__(f"worker {worker_id!r} does not hold run {run_id!r}: it is {held}")
        self.run_id = run_id
        self.worker_id = worker_id
        self.holder = holder
