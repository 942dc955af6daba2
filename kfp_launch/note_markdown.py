"""The Markdown of the merge-request note a run keeps up to date: its hidden marker line and its body.

Pure functions, no I/O and no python-gitlab: :func:`note_marker` is the hidden first line that finds the
note again, :func:`render_note` the body (run link, experiment, state, duration, ticket, parameters and,
once the run ended, metrics and failing tasks). Every value from a user, a pipeline or KFP is put in a
code span or code block so GitLab turns nothing in it into a mention or a reference. Writing the note is
``gitlab_notes.py``'s job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Protocol
from urllib.parse import quote

from kfp_launch.ci_context import CiContext
from kfp_launch.models import RunOutcome, TaskResult
from kfp_launch.reports import plain_text
from kfp_launch.states import OutcomeState, RunState

_MAX_PARAMETERS, _MAX_METRICS, _MAX_VALUE_CHARS, _MAX_ERROR_CHARS, _LOG_LINES = 50, 50, 200, 1_000, 20


class StartedRun(Protocol):
    """What a note needs to know about a run that has started (a :class:`RunOutcome` has all of it)."""

    @property
    def job(self) -> str: ...
    @property
    def pipeline_name(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def run_url(self) -> str: ...
    @property
    def experiment(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, object]: ...


def note_marker(project: str, job: str, merge_request_iid: int) -> str:
    """The hidden first line of a note: ``<!-- kfp-launch:<project>/<job> mr=!<iid> -->``.

    PROJECT and JOB are percent-encoded where they could end the HTML comment or break the line (``--``,
    ``>``, whitespace), e.g. ``<!-- kfp-launch:mlops/kfp-demo/train%201/3 mr=!7 -->``.
    """
    return f"<!-- kfp-launch:{_marker_part(project)}/{_marker_part(job)} mr=!{merge_request_iid} -->"


def _marker_part(text: str) -> str:
    return quote(text, safe="/:@!$&'()*+,;=[]").replace("--", "-%2D")


_STATE_LABELS = {
    OutcomeState.RUNNING: ("🔄", "running"),
    OutcomeState.SUCCEEDED: ("✅", "succeeded"),
    OutcomeState.FAILED: ("❌", "failed"),
    OutcomeState.CANCELED: ("🚫", "canceled"),
    OutcomeState.TIMED_OUT: ("⏱️", "timed out"),
    OutcomeState.INTERRUPTED: ("⚠️", "interrupted (the CI job was stopped)"),
    OutcomeState.UNREACHABLE: ("⚠️", "Kubeflow unreachable"),
    OutcomeState.SKIPPED: ("⏭️", "skipped"),
    OutcomeState.DETACHED: ("🚀", "submitted, not waited for"),
}


def render_note(
    run: StartedRun, ci: CiContext, *, outcome: RunOutcome | None = None, jira_url: str | None = None
) -> str:
    """The note's Markdown (without the marker): run link, experiment, state, duration, ticket, parameters.

    With OUTCOME (the run ended) also the metrics, or "metrics not available from the KFP API" when the
    backend cannot give them (Kubeflow's v2beta1 API, ``outcome.metrics_available``), and each failing task
    with its error and log tail. Every value from a user, a pipeline or KFP is shown in a code span or code
    block (GitLab turns no ``@mention`` or ``#123`` there into a reference), with ``|`` escaped inside
    tables and the code fence longer than any backtick run; link targets must be ``http(s)`` URLs and are
    percent-encoded where Markdown would break.
    """
    state = outcome.state if outcome is not None else OutcomeState.RUNNING
    emoji, word = _STATE_LABELS.get(state, ("ℹ️", state.lower()))
    lines = [f"#### {emoji} Kubeflow Pipelines run of {_code(run.job)}: {word}", ""]
    lines += [f"- **{label}:** {value}" for label, value in _facts(run, ci, outcome, jira_url, f"{emoji} {word}")]
    if outcome is not None and outcome.message:
        lines += ["", f"**Why:** {_code(outcome.message)}"]
    lines += _parameters_section(run.parameters)
    if outcome is not None:
        lines += _metrics_section(outcome)
        lines += _failed_tasks_section([task for task in outcome.tasks if task.state == RunState.FAILED])
    lines += [
        "",
        "<sub>Written by kfp-launch; updated in place when the run ends or the job runs again.</sub>",
    ]
    return "\n".join(lines) + "\n"


def _facts(
    run: StartedRun, ci: CiContext, outcome: RunOutcome | None, jira_url: str | None, state: str
) -> Iterable[tuple[str, str]]:
    if run.run_url:
        yield "Run", _link(_code(run.run_id or run.run_url), run.run_url)
    else:
        yield "Run", _code(run.run_id) if run.run_id else "local run (kfp.local)"
    if run.experiment:
        yield "Experiment", _code(run.experiment)
    if run.pipeline_name:
        yield "Pipeline", _code(run.pipeline_name)
    yield "State", state
    if outcome is not None and outcome.duration_s is not None:
        yield "Duration", _duration(outcome.duration_s)
    if ci.ticket:
        target = f"{jira_url}/browse/{quote(ci.ticket)}" if jira_url else ""
        yield "Ticket", _link(_code(ci.ticket), target)
    if ci.job_name:
        job = _link(_code(ci.job_name), ci.job_url or "")
        pipeline = _link(f"pipeline {_code(ci.pipeline_id)}", ci.pipeline_url or "") if ci.pipeline_id else ""
        yield "GitLab job", f"{job} in {pipeline}" if pipeline else job
    if ci.short_sha:
        branch = f" on {_code(ci.branch)}" if ci.branch else ""
        yield "Commit", f"{_code(ci.short_sha)}{branch}"


def _parameters_section(parameters: Mapping[str, object]) -> list[str]:
    if not parameters:
        return []
    items = list(parameters.items())
    lines = ["", "**Parameters**", "", "| Parameter | Value |", "|---|---|"]
    lines += [
        f"| {_code(name, in_table=True)} | {_code(_value_text(value), in_table=True)} |"
        for name, value in items[:_MAX_PARAMETERS]
    ]
    if len(items) > _MAX_PARAMETERS:
        lines.append(f"| … and {len(items) - _MAX_PARAMETERS} more | |")
    return lines


def _metrics_section(outcome: RunOutcome) -> list[str]:
    if not outcome.metrics_available:
        return [
            "",
            "**Metrics:** metrics not available from the KFP API (Kubeflow keeps them in ML Metadata)",
        ]
    if not outcome.metrics:
        return ["", "**Metrics:** none logged"]
    lines = ["", "**Metrics**", "", "| Task | Metric | Value |", "|---|---|---|"]
    lines += [
        f"| {_code(m.task, in_table=True)} | {_code(m.name, in_table=True)} | {m.value:.6g} |"
        for m in outcome.metrics[:_MAX_METRICS]
    ]
    if len(outcome.metrics) > _MAX_METRICS:
        lines.append(f"| … and {len(outcome.metrics) - _MAX_METRICS} more | | |")
    return lines


def _failed_tasks_section(tasks: list[TaskResult]) -> list[str]:
    lines: list[str] = []
    for task in tasks:
        error = _clip(plain_text(task.error), _MAX_ERROR_CHARS) or "no error message from KFP"
        lines += ["", f"**❌ Task {_code(task.name)} failed:** {_code(error)}"]
        if task.log_tail:
            log = "\n".join(_clip(plain_text(line), 300) for line in task.log_tail[-_LOG_LINES:])
            fence = "`" * max(3, _longest_backtick_run(log) + 1)
            lines += [
                "",
                f"<details><summary>Last log lines{_source(task)}</summary>",
                "",
                f"{fence}text",
                log,
                fence,
                "",
                "</details>",
            ]
    return lines


def _source(task: TaskResult) -> str:
    return f" of {_code(task.log_source)}" if task.log_source else ""


def _code(text: str, *, in_table: bool = False) -> str:
    """TEXT as one inline code span: whitespace collapsed, fenced by more backticks than it contains."""
    text = " ".join(text.split())
    if not text:
        return "*(empty)*"
    fence = "`" * (_longest_backtick_run(text) + 1)
    padded = f" {text} " if "`" in text else text
    if in_table:
        padded = padded.replace("|", "\\|")  # GFM: a pipe in a cell, even in a code span, needs escaping
    return f"{fence}{padded}{fence}"


def _link(text: str, url: str) -> str:
    """``[text](url)`` for an http(s) URL (percent-encoded where Markdown would end it); else just TEXT."""
    if not re.match(r"https?://", url):
        return text
    return f"[{text}]({quote(url, safe=':/?#[]@!$&*+,;=%~')})"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _value_text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return _clip(text, _MAX_VALUE_CHARS) if text else '""'


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    """``42.1 s``, ``3 min 07 s`` or ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
