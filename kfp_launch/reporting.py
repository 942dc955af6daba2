"""What every run reports, local or on Kubeflow: the report files for GitLab's ``artifacts:reports``
(``reports.py``) and the merge request note (``gitlab_notes.py``), with the console's secret masking.

A failure to report is a warning; it never changes the exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kfp_launch.app import App
from kfp_launch.models import RunOutcome

if TYPE_CHECKING:
    from kfp_launch.gitlab_notes import MergeRequestNotes


class Reporting:
    """The report files (always) and the merge request note (in CI, or with ``GITLAB_TOKEN``).

    Args:
        app: report paths (settings), the CI context, the GitLab configuration (environment), console.
        note_jobs: the jobs that keep a merge request note (Kubeflow runs), one note each; none for
            local runs.
    """

    def __init__(self, app: App, *, note_jobs: Sequence[str] = ()) -> None:
        from kfp_launch.reports import ReportPaths

        settings, project_dir = app.settings, app.project_dir
        self._paths = ReportPaths(
            dotenv=project_dir / settings.dotenv_report,
            junit=project_dir / settings.junit_report,
            metrics=project_dir / settings.metrics_report,
        )
        self._console = app.console
        self._results = app.results
        self._note_jobs = frozenset(note_jobs)
        self._notes: MergeRequestNotes | None = None
        if note_jobs and (app.ci.in_ci or app.gitlab.token) and _may_have_merge_request(app):
            from kfp_launch.gitlab_notes import MergeRequestNotes

            self._notes = MergeRequestNotes(app.gitlab, app.ci, app.console, several=len(self._note_jobs) > 1)

    def started(self, outcomes: Sequence[RunOutcome]) -> None:
        """The runs exist: create each job's merge request note."""
        for outcome in outcomes:
            if self._notes is not None and outcome.job in self._note_jobs:
                self._notes.run_started(self._masked(outcome))

    def finished(self, outcomes: Sequence[RunOutcome]) -> None:
        """The runs ended (or the wait stopped): one set of report files for all, each job's note updated."""
        from kfp_launch.reports import write_reports_many

        masked = [self._masked(o) for o in outcomes]
        self._results.extend(outcome_document(o) for o in masked)
        try:
            written = write_reports_many(masked, self._paths)
            self._console.line("reports: " + ", ".join(str(p) for p in written))
        except OSError as exc:
            self._console.warn(f"could not write the reports: {exc}; the exit code is not affected")
        for outcome in masked:
            if self._notes is not None and outcome.job in self._note_jobs:
                self._notes.run_finished(outcome)

    def _masked(self, outcome: RunOutcome) -> RunOutcome:
        # Server messages and task logs can echo a token: reports and notes get the console's masking.
        redact = self._console.redact
        tasks = tuple(
            replace(t, error=redact(t.error), log_tail=tuple(redact(line) for line in t.log_tail))
            for t in outcome.tasks
        )
        parameters = {name: _redacted(value, redact) for name, value in outcome.parameters.items()}
        return replace(outcome, message=redact(outcome.message), tasks=tasks, parameters=parameters)


def _may_have_merge_request(app: App) -> bool:
    """Whether a merge request may belong to this run: outside CI, or in a merge request pipeline, or a branch
    pipeline whose branch has open merge requests (GitLab's ``CI_OPEN_MERGE_REQUESTS``, set in branch and merge
    request pipelines when there are any: docs.gitlab.com/ci/variables/predefined_variables). A push pipeline
    without one says nothing about notes."""
    return not app.ci.in_ci or app.ci.merge_request_iid is not None or bool(app.environ.get("CI_OPEN_MERGE_REQUESTS"))


def outcome_document(outcome: RunOutcome) -> dict[str, object]:
    """One run's ``--json`` result: ``job``, ``pipeline``, ``run_id``, ``url`` ('' for local runs), ``state``,
    ``exit_code`` (int), ``duration_s`` (seconds or None), ``experiment``, ``experiment_id``, ``parameters``
    (name -> value), ``message`` ('' on success), ``local`` (bool)."""
    return {
        "job": outcome.job,
        "pipeline": outcome.pipeline_name,
        "run_id": outcome.run_id,
        "url": outcome.run_url,
        "state": str(outcome.state),
        "exit_code": int(outcome.exit_code),
        "duration_s": outcome.duration_s,
        "experiment": outcome.experiment,
        "experiment_id": outcome.experiment_id,
        "parameters": dict(outcome.parameters),
        "message": outcome.message,
        "local": outcome.local,
    }


def _redacted(value: object, redact: Callable[[str], str]) -> object:
    """A parameter value with masked secrets (strings inside lists and dicts too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    return value
