"""Typed states: a KFP run's state, how a launch ended, why a wait ended, and the one map to exit codes.

Run states are KFP's ``V2beta1RuntimeState`` (``backend/api/v2beta1/run.proto``, ``RuntimeState``); the
server omits the field when it is ``RUNTIME_STATE_UNSPECIFIED`` (protojson with ``EmitUnpopulated: false``,
``backend/src/apiserver/common/utils.go``). Outcome states add what only the launcher knows: the wait stopped
at the deadline, on a signal, after an outage, or was never started (``--no-wait``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from kfp_launch.errors import ExitCode


class RunState(StrEnum):
    """A KFP run's (or task's) state, as the v2beta1 API reports it.

    Source: ``V2beta1RuntimeState`` in kubeflow/pipelines ``backend/api/v2beta1/run.proto``.
    CANCELING and PAUSED are not terminal; KFP 2.x marks a terminated run CANCELING, then FAILED
    (``backend/src/apiserver/storage/run_store.go``, ``TerminateRun``).
    """

    UNSPECIFIED = "RUNTIME_STATE_UNSPECIFIED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    PAUSED = "PAUSED"

    @classmethod
    def parse(cls, text: object) -> RunState:
        """The state named by ``text`` (case-insensitive); UNSPECIFIED for a missing or unknown value.

        The generated client does not validate enum strings (``V2beta1RuntimeState`` has empty
        ``openapi_types``), so anything can arrive; an unknown state is treated as still running."""
        try:
            return cls(str(text or "").strip().upper())
        except ValueError:
            return cls.UNSPECIFIED

    @property
    def is_terminal(self) -> bool:
        """True when the state can no longer change: SUCCEEDED, FAILED, SKIPPED, CANCELED."""
        return self in _TERMINAL

    @property
    def is_attachable(self) -> bool:
        """True for a run a retried CI job may wait on instead of submitting another. Not CANCELING: a run
        on its way out (e.g. terminated by the previous attempt's after_script) is replaced, not waited for."""
        return self in _ATTACHABLE


_TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.SKIPPED, RunState.CANCELED})
_ATTACHABLE = frozenset({RunState.UNSPECIFIED, RunState.PENDING, RunState.RUNNING, RunState.PAUSED})


class OutcomeState(StrEnum):
    """How one launched run ended for kfp-launch (what reports, notes and the exit code say)."""

    RUNNING = "RUNNING"
    """The run has started (the merge request note's first state); not an ending."""
    SUCCEEDED = "SUCCEEDED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    """Canceled, terminated by someone else, or deleted while we waited."""
    TIMED_OUT = "TIMED_OUT"
    """The wait deadline passed (the run was terminated or detached)."""
    INTERRUPTED = "INTERRUPTED"
    """A signal (SIGTERM/SIGINT/SIGHUP) stopped the wait."""
    DETACHED = "DETACHED"
    """Submitted without waiting (``--no-wait``)."""
    UNREACHABLE = "UNREACHABLE"
    """Kubeflow failed for longer than ``--max-outage`` while we waited."""
    ERROR = "ERROR"
    """The wait stopped on an error (credentials refused, TLS)."""


WaitEnd = Literal["terminal", "deadline", "outage"]
"""Why a wait ended: every run reached a terminal state, the deadline passed, or the API stayed down."""

_EXIT_CODES = {
    OutcomeState.RUNNING: ExitCode.SUCCESS,
    OutcomeState.SUCCEEDED: ExitCode.SUCCESS,
    OutcomeState.SKIPPED: ExitCode.SUCCESS,
    OutcomeState.DETACHED: ExitCode.SUCCESS,
    OutcomeState.FAILED: ExitCode.RUN_FAILED,
    OutcomeState.CANCELED: ExitCode.RUN_CANCELED,
    OutcomeState.TIMED_OUT: ExitCode.DEADLINE,
    OutcomeState.UNREACHABLE: ExitCode.UNREACHABLE,
}


def exit_code_for(state: OutcomeState, *, cause: ExitCode | None = None) -> ExitCode:
    """The process exit code of an outcome (documented in README, Exit codes).

    SUCCEEDED, SKIPPED, DETACHED (and RUNNING) -> 0; FAILED -> 6; CANCELED -> 7; TIMED_OUT -> 8;
    UNREACHABLE -> 5. INTERRUPTED and ERROR take ``cause``: the signal's ``128 + N`` or the error's code.

    Raises:
        ValueError: INTERRUPTED or ERROR without a ``cause``.
    """
    if state in (OutcomeState.INTERRUPTED, OutcomeState.ERROR):
        if cause is None:
            raise ValueError(f"an outcome {state} needs the exit code of its cause")
        return cause
    return _EXIT_CODES[state]
