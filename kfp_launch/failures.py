"""Transient or permanent: the one table that says what kfp-launch does with each failure of a KFP request,
while submitting (nothing of ours exists yet, or the run is being created) and while waiting (the run exists).

A transient failure is retried with backoff until ``--max-outage`` (then exit 5, and the CI template's retry
attaches to the run); a permanent one stops at once with the server's message (exit 3; runs this command
already submitted for other jobs are terminated).
Once the run exists kfp-launch never exits 2 or 3: only a refused login (4), a deleted run (7) or an outage
longer than ``--max-outage`` (5) end the wait early. The README shows this table; ``tests/test_failures.py``
has a test per row.
"""

from __future__ import annotations

from enum import StrEnum

from kfp_launch.errors import KfpApiError, KfpLaunchError, KfpTlsError, TransientKfpError


class Failure(StrEnum):
    """What a failed request means."""

    TRANSIENT = "transient"
    """It may pass: retried with backoff until ``--max-outage`` (exit 5)."""
    PERMANENT = "permanent"
    """The request cannot succeed as sent: exit 3 at once with the server's message."""
    AUTH = "auth"
    """Credentials refused (401/403, or a login page): retried once, then exit 4."""
    CONFLICT = "conflict"
    """409: it exists already (two jobs creating one experiment: look it up again)."""
    NOT_FOUND = "not found"
    """404: while waiting, the run was deleted (exit 7)."""


PERMANENT_500_MARKERS = (
    "Data too long",  # MySQL error 1406: text longer than its column (strict mode)
    "Incorrect string value",  # MySQL error 1366: 4-byte UTF-8 in a 3-byte utf8 column
    "Too long: must have at most",  # Kubernetes: the Workflow's annotations too large (KFP 2.0-2.2)
    "etcdserver: request is too large",  # Kubernetes: the Workflow object too large (kubeflow/pipelines#9837)
    "Request entity too large",
    "InvalidInputError",  # KFP's own validation wrapped in a 500 (backend/src/common/util/error.go)
    "Invalid input error",
    "Workflow.argoproj.io",  # Kubernetes refused the Workflow object ('Workflow.argoproj.io "x" is invalid: ...')
)
"""Messages that make a 500 permanent: the input is too long, invalid or not storable, and every retry
would get the same answer (docs/kfp-backend-notes.md, 'Errors and status codes')."""

TABLE: tuple[tuple[str, Failure, Failure], ...] = (
    ("connection refused, reset or dropped; timeout", Failure.TRANSIENT, Failure.TRANSIENT),
    ("HTTP 408, 429, 502, 503, 504", Failure.TRANSIENT, Failure.TRANSIENT),
    ("HTTP 500 without a validation message", Failure.TRANSIENT, Failure.TRANSIENT),
    ("HTTP 500 saying the input is too long, invalid or not storable", Failure.PERMANENT, Failure.TRANSIENT),
    ("HTTP 400, 422 and other 4xx", Failure.PERMANENT, Failure.TRANSIENT),
    (
        "a 200 whose body is not a run or experiment (a create's: retried after looking the run up by key)",
        Failure.PERMANENT,
        Failure.TRANSIENT,
    ),
    ("TLS verification failed", Failure.PERMANENT, Failure.TRANSIENT),
    ("HTTP 401, 403; a login page", Failure.AUTH, Failure.AUTH),
    ("HTTP 404", Failure.PERMANENT, Failure.NOT_FOUND),
    ("HTTP 409 (create experiment)", Failure.CONFLICT, Failure.TRANSIENT),
)
"""(what failed, while submitting, while waiting): the rows README, 'Transient or permanent' shows."""


def classify(status: int, message: str) -> Failure:
    """What an HTTP error answer means while submitting (see :data:`TABLE`).

    Args:
        status: the HTTP status.
        message: the server's message (the gRPC error body's ``message``).
    """
    if status in (401, 403):
        return Failure.AUTH
    if status == 409:
        return Failure.CONFLICT
    if status == 500:
        return Failure.PERMANENT if any(marker in message for marker in PERMANENT_500_MARKERS) else Failure.TRANSIENT
    if status in (408, 429) or status >= 500:
        return Failure.TRANSIENT
    return Failure.PERMANENT


def while_waiting(exc: KfpLaunchError) -> KfpLaunchError:
    """The same failure once the run exists: anything but a refused login or a 404 is transient, so that only
    ``--max-outage`` ends the wait (exit 5, the run left for the CI job's retry), never exit 2 or 3."""
    if isinstance(exc, (KfpApiError, KfpTlsError)):  # a deleted run's 404 was already read as such (read_runs)
        return TransientKfpError(exc.message, hint=exc.hint)
    return exc
