"""Waiting on Kubeflow: the poll loop, reading N runs per tick, and the one retry rule for API calls.

Time is injected (``clock`` in seconds, monotonic; ``sleep``), so tests and benchmarks simulate hours
in microseconds. Why our own loop: the SDK's ``Client.wait_for_run_completion`` never treats CANCELED as
finished (kubeflow/pipelines#14473), dies on one 503, has no request timeout (kubeflow/pipelines#8661) and
retries a 401 without bound (``kfp/client/client.py``, ``wait_for_run_completion``).

Rules:
- terminal states are SUCCEEDED, FAILED, SKIPPED, CANCELED; CANCELING and PAUSED are shown, not final;
- the interval starts at ``first_interval_s`` and grows by ``backoff`` up to a cap that depends on the
  runs' age: ``young_cap_s`` while they are younger than ``young_age_s`` (a quick answer for short
  runs), ``cap_s`` after (few requests for long ones);
- transient failures (HTTP 408/429/5xx, refused/reset/dropped connections, timeouts) are retried with
  the same backoff by :func:`call_with_retry` (tenacity), the one retry engine of kfp-launch; only
  ``max_outage_s`` of continuous failure ends a wait early;
- HTTP 401/403 is retried once at once (a rotated token file is re-read on every request), then raised;
- the deadline is checked between polls; no sleep runs past it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from kfp_launch.errors import KfpApiError, KfpAuthError, KfpUnavailableError, TransientKfpError
from kfp_launch.models import RunStatus
from kfp_launch.states import RunState, WaitEnd

T = TypeVar("T")

IDS_PER_REQUEST = 50
"""Run ids per list request: 50 UUIDs keep the filtered URL under ~3 KB (ingress header buffers are
often 8 KB), so up to 50 runs cost one request per poll tick, 200 runs four."""

PREFLIGHT_OUTAGE_S = 30.0
"""Before anything is submitted, and in ``cancel`` (the after_script has 5 minutes for everything), give up
on an unreachable Kubeflow after this long: a wrong KFP_HOST should not take --max-outage to report."""

DELETED = "the run was deleted"
"""The error of a run that vanished while we waited (its ``GET`` answers 404)."""


@dataclass(frozen=True, kw_only=True)
class PollPolicy:
    """How often to poll and how long an outage may last, in seconds (defaults in README, Performance).

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
        reason: why it ended (:data:`~kfp_launch.states.WaitEnd`).
        polls: how many reads succeeded (one read covers every run).
        outage_s: the length of the outage that ended the wait (``"outage"`` only), seconds.
        last_error: the last transient error's message ('' if none).
    """

    statuses: Mapping[str, RunStatus]
    reason: WaitEnd
    polls: int
    outage_s: float = 0.0
    last_error: str = ""


OnTransient = Callable[[KfpUnavailableError, float], None]
"""Told of each transient failure and how long the outage has lasted, in seconds."""


def call_with_retry(
    call: Callable[[], T],
    *,
    policy: PollPolicy,
    on_transient: OnTransient = lambda _e, _outage: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop_at: float | None = None,
    age_at_start_s: float = 0.0,
    polls_before: int = 0,
) -> T:
    """Run one API call, retrying transient failures with the poll backoff for up to ``max_outage_s``
    (or until ``stop_at`` on ``clock``), and a 401/403 once, at once (credentials are re-read per request).
    ``polls_before`` continues a poll loop's backoff: an outage of an old run's wait does not start again
    at the first interval.

    Use it only for calls that are safe to repeat (reads, terminate, create-experiment whose 409 the
    caller handles); a create-run must first check whether the failed attempt created the run
    (``submission.create_run_once``).

    Raises:
        TransientKfpError: still failing after ``max_outage_s`` seconds or at ``stop_at`` (exit 5).
        KfpAuthError: refused twice in a row (exit 4).
        KfpLaunchError: anything else the call raises, at once.
    """
    from tenacity import RetryCallState, Retrying, retry_if_exception
    from tenacity.stop import stop_base

    started = clock()
    give_up_at = started + policy.max_outage_s if stop_at is None else min(started + policy.max_outage_s, stop_at)
    refusals = 0  # 401/403 in a row

    class _OutageOver(stop_base):
        def __call__(self, retry_state: RetryCallState) -> bool:
            nonlocal refusals
            failure = retry_state.outcome.exception() if retry_state.outcome else None
            if isinstance(failure, KfpAuthError):
                refusals += 1  # counted until a success ends the call, whatever fails in between
                return refusals >= 2
            if isinstance(failure, KfpUnavailableError):
                on_transient(failure, clock() - started)
            return clock() >= give_up_at

    def should_retry(exc: BaseException) -> bool:
        return isinstance(exc, (KfpAuthError, TransientKfpError))

    def wait(retry_state: RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, KfpAuthError):
            return 0.0
        pause = policy.interval(polls_before + retry_state.attempt_number - 1, age_at_start_s + clock() - started)
        return min(pause, max(0.0, give_up_at - clock()))

    retrying = Retrying(
        stop=_OutageOver(), wait=wait, retry=retry_if_exception(should_retry), sleep=sleep, reraise=True
    )
    return retrying(call)


@dataclass(frozen=True, kw_only=True)
class Retry:
    """:func:`call_with_retry` with one policy, clock and transient-failure report: ``retry(lambda: ...)``.

    Attributes:
        policy: the backoff and the allowed outage.
        clock, sleep: monotonic seconds and the matching sleep.
        on_transient: told of each transient failure (e.g. a ``warning:`` line).
    """

    policy: PollPolicy
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    on_transient: OnTransient = field(default=lambda _e, _outage: None)

    def __call__(self, call: Callable[[], T]) -> T:
        """Run ``call`` under the retry rule (see :func:`call_with_retry` for what it raises)."""
        return call_with_retry(
            call, policy=self.policy, on_transient=self.on_transient, clock=self.clock, sleep=self.sleep
        )


def wait_for_runs(
    fetch: Callable[[], Mapping[str, RunStatus]],
    *,
    policy: PollPolicy,
    on_transient: OnTransient = lambda _e, _outage: None,
    deadline: float | None = None,
    age_at_start_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll until every run ``fetch`` returns is terminal, the deadline passes or the API stays down.

    One call of ``fetch`` is one poll tick, whatever the number of runs (:func:`read_runs`: one request
    for up to :data:`IDS_PER_REQUEST` runs), so the request rate does not grow with the runs.

    Args:
        fetch: reads the runs' statuses by run id; raises TransientKfpError/KfpAuthError/KfpApiError.
        policy: the intervals and the allowed outage.
        on_transient: called with each transient error and the outage so far, seconds.
        deadline: the ``clock()`` value after which to stop (None: no deadline).
        age_at_start_s: the runs' age when the wait starts, seconds (for ``watch`` of an old run).
        clock, sleep: monotonic seconds and the matching sleep.

    Raises:
        KfpAuthError: 401/403 twice in a row.
        KfpApiError: any other refusal.
    """
    started = clock()
    statuses: dict[str, RunStatus] = {}
    polls = 0
    while True:
        tick = clock()
        try:
            statuses.update(
                call_with_retry(
                    fetch,
                    policy=policy,
                    on_transient=on_transient,
                    clock=clock,
                    sleep=sleep,
                    stop_at=deadline,
                    age_at_start_s=age_at_start_s + tick - started,
                    polls_before=polls,
                )
            )
        except TransientKfpError as exc:
            reason: WaitEnd = "deadline" if deadline is not None and clock() >= deadline else "outage"
            return WaitResult(
                statuses=statuses, reason=reason, polls=polls, outage_s=clock() - tick, last_error=exc.message
            )
        polls += 1
        if statuses and all(s.is_terminal for s in statuses.values()):
            return WaitResult(statuses=statuses, reason="terminal", polls=polls)
        now = clock()
        if deadline is not None and now >= deadline:
            return WaitResult(statuses=statuses, reason="deadline", polls=polls)
        pause = policy.interval(polls - 1, age_at_start_s + now - started)
        sleep(pause if deadline is None else min(pause, max(0.0, deadline - now)))


class RunReader(Protocol):
    """What :func:`read_runs` needs from the KFP adapter (``kfp_api.KfpApi``)."""

    def get_run(self, run_id: str, *, timeout_s: float | None = None) -> RunStatus: ...
    def list_runs_by_id(
        self, experiment_id: str, run_ids: list[str], *, timeout_s: float | None = None
    ) -> list[RunStatus]: ...


def read_runs(
    api: RunReader,
    experiment_id: str,
    run_ids: Sequence[str],
    *,
    time_left: Callable[[], float | None] = lambda: None,
) -> dict[str, RunStatus]:
    """One poll tick: every run's status, by run id, in as few requests as the API allows.

    One run is one ``GET /runs/{id}``; several are one filtered ``GET /runs`` per :data:`IDS_PER_REQUEST`
    ids. A run the list no longer has (or every run, when the list itself answers 404: the experiment is
    gone) is read by id; a run whose read answers 404 was deleted and is reported CANCELED with the error
    :data:`DELETED` (exit 7), in both cases. Each request ends within ``time_left()`` seconds (asked before
    each one; None: its own timeout).

    Raises:
        TransientKfpError, KfpAuthError: as the requests raise them (the caller retries).
        KfpApiError: any refusal but a 404 on one run.
    """
    ids = list(dict.fromkeys(run_ids))
    statuses: dict[str, RunStatus] = {}
    if len(ids) > 1:
        for start in range(0, len(ids), IDS_PER_REQUEST):
            try:
                chunk = ids[start : start + IDS_PER_REQUEST]
                listed = api.list_runs_by_id(experiment_id, chunk, timeout_s=time_left())
            except KfpApiError as exc:
                if exc.status != 404:
                    raise
                break
            statuses.update((s.run_id, s) for s in listed if s.run_id in ids)
    for run_id in ids:
        if run_id not in statuses:
            statuses[run_id] = _read_one(api, run_id, time_left())
    return statuses


def _read_one(api: RunReader, run_id: str, timeout_s: float | None) -> RunStatus:
    try:
        return api.get_run(run_id, timeout_s=timeout_s)
    except KfpApiError as exc:
        if exc.status != 404:
            raise
        return RunStatus(run_id=run_id, state=RunState.CANCELED, error=DELETED)
