"""Domain errors. The service maps each class to one canonical gRPC status."""

from __future__ import annotations


class DomainError(Exception):
    """Base class; `field` names the offending input where there is one."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(DomainError):
    """The request itself is malformed, whatever the state."""


class NotFound(DomainError):
    """A referenced entity (SKU, node, reservation ...) does not exist."""


class AlreadyExists(DomainError):
    """The entity to create exists already."""


class FailedPrecondition(DomainError):
    """The request is well formed but the current state forbids it (e.g. not enough stock)."""


class PermissionDenied(DomainError):
    """The caller's roles do not allow this (a check that reads the request or the state:
    which exception, task or approval it is)."""


class LimitExceeded(DomainError):
    """A configured limit (lines per request, ...) was exceeded."""


class InvariantViolation(Exception):
    """A ledger invariant would break. Never expected: validation precedes every change."""


class ApplyFailed(Exception):
    """Applying a command's events failed with an error that is not a refusal (a fault in
    the bookkeeping): some of them may have changed the state, which no longer matches
    the log. The cause is chained."""
