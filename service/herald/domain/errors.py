"""Errors that cross ports. Adapters translate every vendor failure into one of these."""

from __future__ import annotations


class DeliveryError(Exception):
    """A send failed. ``permanent`` says whether retrying can ever help.

    ``retry_after`` (seconds) is the provider's own hint, e.g. Slack's Retry-After
    or SendGrid's X-RateLimit-Reset; the retry policy never waits less than it.
    ``unknown`` marks a send whose request may have reached the provider (timeout
    after the request left): it must be reconciled before it is sent again.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.unknown = unknown

    def __repr__(self) -> str:
        kind = "permanent" if self.permanent else "transient"
        return f"DeliveryError({self.message!r}, {kind})"


class RenderError(Exception):
    """A report could not be rendered; the run fails and its owner is alerted."""


class InvalidTransition(Exception):
    """A state change that the transition table forbids."""


class StorageUnavailable(Exception):
    """The store cannot be read or written now (disk full, read-only, corrupt, unreachable).

    The message names the file or service and the likely cause. A request that meets it
    answers 503 + Retry-After; at start-up Herald exits 2 with the message, no traceback.
    """

    def __init__(self, message: str, *, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
