"""Waiting on Kubeflow: the poll loop and the retry rule for single calls.

Time is injected (``clock`` in seconds, monotonic; ``sleep``), so tests and benchmarks simulate hours
in microseconds. Why our own loop (reference kfp-api.md §2): the SDK's ``wait_for_run_completion``
never treats CANCELED as finished, dies on one 503, has no request timeout and spins on 401.

Rules:
- terminal states are SUCCEEDED, FAILED, SKIPPED, CANCELED; CANCELING and PAUSED are shown, not final;
- the interval starts at ``first_interval_s`` and grows by ``backoff`` up to a cap that depends on the
  run's age: ``young_cap_s`` while the run is younger than ``young_age_s`` (a quick answer for short
  runs), ``cap_s`` after (few requests for long ones);
- transient failures (HTTP 408/429/5xx, refused/reset/dropped connections, timeouts) are retried with
  the same backoff and never end the wait early; only ``max_outage_s`` of continuous failure does;
- HTTP 401/403 is retried once at once (a rotated token file is re-read on every request), then raised;
- the deadline is checked between polls; the loop sleeps no longer than the time left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from kfp_launch.errors import KfpAuthError, KfpUnavailableError
from kfp_launch.models import RunStatus

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class PollPolicy:
    """How often to poll, in seconds (see the module docstring; defaults in README, Performance).

    Attributes:
        first_interval_s: the first interval (``--poll-interval``).
        backoff: the factor each interval grows by.
        young_cap_s: the interval cap while the run is younger than ``young_age_s``.
        young_age_s: the run age in seconds at which the cap becomes ``cap_s``.
        cap_s: the interval cap for older runs.
        max_outage_s: how long the API may fail continuously before we give up (``--max-outage``).
    """

    first_interval_s: float = 2.0
    backoff: float = 1.5
    young_cap_s: float = 10.0
    young_age_s: float = 300.0
    cap_s: float = 30.0
    max_outage_s: float = 600.0

    def interval(self, polls: int, age_s: float) -> float:
        """The sleep before the next poll, after ``polls`` polls, for a run ``age_s`` seconds old."""
        cap = self.young_cap_s if age_s < self.young_age_s else self.cap_s
        grown = self.first_interval_s * self.backoff ** min(polls, 64)
        return max(0.0, min(grown, max(cap, self.first_interval_s)))


@dataclass(frozen=True, kw_only=True)
class WaitResult:
    """Why the wait ended.

    Attributes:
        statuses: each run as last read, by run id (a run never read successfully is absent).
        reason: ``"terminal"`` (every run ended), ``"deadline"`` or ``"outage"``.
        polls: how many reads succeeded (one read covers every run).
        attempts: how many reads were tried (successful or not), i.e. poll ticks.
        outage_s: the length of the outage that ended the wait (``"outage"`` only), seconds.
        last_error: the last transient error's message ('' if none).
    """

    statuses: Mapping[str, RunStatus]
    reason: str
    polls: int
    attempts: int = 0
    outage_s: float = 0.0
    last_error: str = ""

    @property
    def status(self) -> RunStatus | None:
        """The only run's last status, for single-run waits (None if never read)."""
        return next(iter(self.statuses.values()), None)


def wait_for_run(
    get_status: Callable[[], RunStatus],
    *,
    policy: PollPolicy,
    on_status: Callable[[RunStatus], None] = lambda _s: None,
    on_transient: Callable[[KfpUnavailableError, float], None] = lambda _e, _outage: None,
    deadline: float | None = None,
    age_at_start_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll one run (``get_status``: one GET) until it is terminal; see :func:`wait_for_runs`."""

    def fetch() -> dict[str, RunStatus]:
        status = get_status()
        on_status(status)
        return {status.run_id: status}

    return wait_for_runs(
        fetch,
        policy=policy,
        on_transient=on_transient,
        deadline=deadline,
        age_at_start_s=age_at_start_s,
        clock=clock,
        sleep=sleep,
    )


def wait_for_runs(
    fetch: Callable[[], Mapping[str, RunStatus]],
    *,
    policy: PollPolicy,
    expected: int | None = None,
    on_transient: Callable[[KfpUnavailableError, float], None] = lambda _e, _outage: None,
    deadline: float | None = None,
    age_at_start_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll until every run is terminal, the deadline passes or the API stays down.

    One call of ``fetch`` is one poll tick, whatever the number of runs (e.g. one list request of the
    experiment's runs), so the request rate does not grow with the runs.

    Args:
        fetch: reads the runs' statuses; raises TransientKfpError/KfpAuthError/KfpApiError.
        policy: the intervals and the allowed outage.
        expected: how many runs must be seen before the wait can end (default: whatever fetch returns).
        on_transient: called with each transient error and the outage so far, seconds.
        deadline: the ``clock()`` value after which to stop (None: no deadline).
        age_at_start_s: the runs' age when the wait starts, seconds (for ``watch`` of an old run).
        clock, sleep: monotonic seconds and the matching sleep.

    Raises:
        KfpAuthError: 401/403 twice in a row.
        KfpApiError: any other refusal (e.g. 404: no such run).
    """
    started = clock()
    polls = attempts = 0
    outage_since: float | None = None
    auth_retried = False
    statuses: dict[str, RunStatus] = {}
    last_error = ""
    while True:
        now = clock()
        attempts += 1
        try:
            statuses.update(fetch())
        except KfpAuthError:
            if auth_retried:
                raise
            auth_retried = True
            continue
        except KfpUnavailableError as exc:
            if not _is_transient(exc):
                raise  # e.g. a TLS failure: waiting will not fix it
            outage_since = now if outage_since is None else outage_since
            last_error = exc.message
            on_transient(exc, clock() - outage_since)
            if clock() - outage_since >= policy.max_outage_s:
                return WaitResult(
                    statuses=statuses,
                    reason="outage",
                    polls=polls,
                    attempts=attempts,
                    outage_s=clock() - outage_since,
                    last_error=last_error,
                )
        else:
            polls += 1
            outage_since, auth_retried = None, False
            complete = expected is None or len(statuses) >= expected
            if complete and statuses and all(s.is_terminal for s in statuses.values()):
                return WaitResult(
                    statuses=statuses, reason="terminal", polls=polls, attempts=attempts, last_error=last_error
                )
        now = clock()
        if deadline is not None and now >= deadline:
            return WaitResult(
                statuses=statuses, reason="deadline", polls=polls, attempts=attempts, last_error=last_error
            )
        pause = policy.interval(attempts - 1, age_at_start_s + now - started)
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - now))
        if outage_since is not None:
            pause = min(pause, max(0.0, outage_since + policy.max_outage_s - now))
        sleep(pause)


def _is_transient(exc: KfpUnavailableError) -> bool:
    from kfp_launch.kfp_api import TransientKfpError

    return isinstance(exc, TransientKfpError)


def call_with_retry(
    call: Callable[[], T],
    *,
    policy: PollPolicy,
    on_transient: Callable[[KfpUnavailableError, float], None] = lambda _e, _outage: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run one API call, retrying transient failures with backoff for up to ``max_outage_s``, and a
    401/403 once (credentials are re-read per request).

    Use it only for calls that are safe to repeat (reads, terminate, create-experiment whose 409 the
    caller handles); a create-run must first check whether the failed attempt created the run.

    Raises:
        KfpUnavailableError: still failing after ``max_outage_s`` seconds (the last error, exit 5).
        KfpAuthError, KfpApiError: as the call raises them.
    """
    from tenacity import RetryCallState, Retrying, retry_if_exception
    from tenacity.stop import stop_base

    started = clock()

    class _OutageOver(stop_base):
        def __call__(self, retry_state: RetryCallState) -> bool:
            failure = retry_state.outcome.exception() if retry_state.outcome else None
            if isinstance(failure, KfpAuthError):
                return retry_state.attempt_number >= 2
            elapsed = clock() - started
            if isinstance(failure, KfpUnavailableError):
                on_transient(failure, elapsed)
            return elapsed >= policy.max_outage_s

    def should_retry(exc: BaseException) -> bool:
        return isinstance(exc, KfpAuthError) or (isinstance(exc, KfpUnavailableError) and _is_transient(exc))

    def wait(retry_state: RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, KfpAuthError):
            return 0.0
        pause = policy.interval(retry_state.attempt_number - 1, 0.0)
        return min(pause, max(0.0, started + policy.max_outage_s - clock()))

    retrying = Retrying(
        stop=_OutageOver(), wait=wait, retry=retry_if_exception(should_retry), sleep=sleep, reraise=True
    )
    return retrying(call)
