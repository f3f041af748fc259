"""The few exception types callers catch.

Validation problems are always ``pydantic.ValidationError`` (a ``ValueError``) naming the field;
the types here are for what happens in, or because of, the database.
"""


class CosmosModelsError(Exception):
    """Base class of every error this package raises on its own account."""


class DatabaseError(CosmosModelsError):
    """A database or driver error, translated so that its text never carries a password."""


class IntegrityViolation(DatabaseError):
    """The database refused a write: a foreign key, NOT NULL, CHECK or unique rule."""


class MigrationError(CosmosModelsError):
    """A schema migration could not be applied; the message names the revision and why."""
