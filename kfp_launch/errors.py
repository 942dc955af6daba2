"""Exit codes and the error hierarchy of kfp-launch.

Every error a user can cause is a :class:`KfpLaunchError` subclass carrying a one-paragraph
``message`` (what happened, to what), a ``hint`` (what to do) and the :class:`ExitCode` the
process ends with. The single boundary in ``cli.py`` prints them as ``error:``/``hint:`` lines.
Broad ``except`` clauses exist only there and where user code runs (importing a pipeline module,
compiling it), each marked with its reason.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, stable across releases (documented in README.md).

    Meant for GitLab's ``allow_failure: exit_codes`` and ``retry: exit_codes``.
    """

    SUCCESS = 0
    """The run succeeded (a SKIPPED run too, with a warning)."""
    INTERNAL = 1
    """An internal error: a bug in kfp-launch."""
    USAGE = 2
    """A usage error: what the argument parser rejects."""
    INVALID_INPUT = 3
    """Invalid input, configuration or pipeline; nothing was submitted."""
    AUTH = 4
    """Authentication or permission refused by Kubeflow."""
    UNREACHABLE = 5
    """Kubeflow unreachable or failing for longer than the allowed outage."""
    RUN_FAILED = 6
    """The run failed."""
    RUN_CANCELED = 7
    """The run was canceled or terminated by someone else."""
    DEADLINE = 8
    """The wait deadline was exceeded (the run was terminated or detached)."""
    SIGHUP = 129
    """Interrupted by SIGHUP (128 + 1)."""
    SIGINT = 130
    """Interrupted by SIGINT (128 + 2)."""
    SIGTERM = 143
    """Interrupted by SIGTERM (128 + 15), e.g. a canceled GitLab job."""


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "run succeeded (SKIPPED too, with a warning)",
    ExitCode.INTERNAL: "internal error (a bug in kfp-launch)",
    ExitCode.USAGE: "usage error (rejected by the argument parser)",
    ExitCode.INVALID_INPUT: "invalid input, configuration or pipeline (nothing submitted)",
    ExitCode.AUTH: "authentication or permission refused by Kubeflow",
    ExitCode.UNREACHABLE: "Kubeflow unreachable or failing for longer than the allowed outage",
    ExitCode.RUN_FAILED: "run failed",
    ExitCode.RUN_CANCELED: "run canceled or terminated by someone else",
    ExitCode.DEADLINE: "wait deadline exceeded",
    ExitCode.SIGHUP: "interrupted by SIGHUP",
    ExitCode.SIGINT: "interrupted by SIGINT",
    ExitCode.SIGTERM: "interrupted by SIGTERM (e.g. a canceled CI job)",
}


SEVERITY: tuple[ExitCode, ...] = (
    ExitCode.SIGTERM,
    ExitCode.SIGINT,
    ExitCode.SIGHUP,
    ExitCode.RUN_FAILED,
    ExitCode.DEADLINE,
    ExitCode.RUN_CANCELED,
    ExitCode.UNREACHABLE,
    ExitCode.SUCCESS,
)
"""Worst first: the exit code of several runs (``run --all``) is the worst of theirs. An interruption
wins; a failed run beats a missed deadline, which beats a canceled run; "unreachable" (5) comes last among
failures because the template retries it, and a retry is only right when nothing else went wrong."""


def worst_exit_code(codes: list[int]) -> ExitCode:
    """The worst of ``codes`` by :data:`SEVERITY` (SUCCESS for an empty list)."""
    ranked = [ExitCode(c) for c in codes]
    return min(ranked, key=SEVERITY.index, default=ExitCode.SUCCESS)


class KfpLaunchError(Exception):
    """Base of every error kfp-launch reports to the user.

    Args:
        message: what happened and to what, one paragraph, no traceback.
        hint: what the user should do about it; may be empty.

    Attributes:
        exit_code: the :class:`ExitCode` the process ends with.
    """

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(KfpLaunchError):
    """A command-line argument is malformed (exit 2)."""

    exit_code = ExitCode.USAGE


class InputError(KfpLaunchError):
    """Invalid input, configuration or pipeline; nothing was submitted (exit 3)."""

    exit_code = ExitCode.INVALID_INPUT


class ConfigError(InputError):
    """A setting (flag, environment variable or ``[tool.kfp-launch]`` value) is invalid (exit 3)."""


class JobNotFoundError(InputError):
    """No module ``<package>.<job>`` exists in the project (exit 3)."""


class PipelineError(InputError):
    """The job's module fails to import, or defines no usable ``@dsl.pipeline`` (exit 3)."""


class ParameterError(InputError):
    """Pipeline parameters are unknown, missing or of the wrong type (exit 3)."""


class ContextError(InputError):
    """The CI context (branch, commit) cannot be determined (exit 3)."""


class LocalRunError(KfpLaunchError):
    """A local (kfp.local) run could not finish: its worker died (exit 6, like a failed run)."""

    exit_code = ExitCode.RUN_FAILED


class KfpAuthError(KfpLaunchError):
    """Kubeflow refused the credentials or the permission (HTTP 401/403, login page) (exit 4)."""

    exit_code = ExitCode.AUTH


class KfpUnavailableError(KfpLaunchError):
    """Kubeflow was unreachable or failing for longer than the allowed outage (exit 5)."""

    exit_code = ExitCode.UNREACHABLE


class KfpApiError(KfpLaunchError):
    """Kubeflow answered a request with an error that is neither auth nor transient (exit 3).

    Typically HTTP 400 (invalid argument) or 404 (run not found): the input was wrong.

    Attributes:
        status: the HTTP status (0 when not from a response).
    """

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, message: str, *, hint: str = "", status: int = 0) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class TransientKfpError(KfpUnavailableError):
    """A failure that may pass: HTTP 408/429/5xx, a refused/reset/dropped connection, a timeout.

    Retried by :func:`kfp_launch.polling.call_with_retry` until the allowed outage is over; then it is
    the exit-5 error itself.

    Attributes:
        maybe_applied: True when a write may have reached the server before the failure (5xx,
            timeout, dropped connection on a POST): the caller must check before repeating it.
    """

    def __init__(self, message: str, *, hint: str = "", maybe_applied: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.maybe_applied = maybe_applied


class KfpTlsError(InputError):
    """TLS verification failed: a configuration problem (CA bundle), not an outage (exit 3)."""


class KfpConflictError(KfpApiError):
    """HTTP 409: the resource exists already (e.g. an experiment name in that namespace)."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived (SIGINT arrives as ``KeyboardInterrupt``); exit ``128 + signum``.

    Raised in the main thread by the CLI's signal handler, once: a second signal while we clean up
    (terminating the run) is ignored, so cleanup happens exactly once.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum
