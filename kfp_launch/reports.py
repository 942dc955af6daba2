"""The report files every run writes, for GitLab's ``artifacts:reports``.

Reference: https://docs.gitlab.com/ci/yaml/artifacts_reports/ and docs/gitlab-notes.md ('dotenv reports',
'JUnit reports').

* a **dotenv** report (``KFP_RUN_ID=...`` lines) that later jobs receive as variables;
* a **JUnit XML** report: one test case per pipeline task, shown in the merge request's test summary and the
  pipeline's Tests tab;
* a **metrics** report (Prometheus-style ``name{labels} value`` lines, as GitLab parses them) for the merge request's metrics widget.

The formats are written for GitLab's own parsers, which are stricter or looser than their specs in places;
each writer says which rule it follows. No vendor SDK here: plain ``xml.etree.ElementTree`` and strings.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from kfp_launch.models import MetricValue, RunOutcome, TaskResult
from kfp_launch.states import OutcomeState, RunState

DOTENV_MAX_BYTES = 5 * 1024
"""GitLab's default dotenv size limit, in bytes (plan limit ``dotenv_size``, 5120 by default:
https://docs.gitlab.com/administration/instance_limits/#limit-dotenv-file-size)."""

DOTENV_MAX_VARIABLES = 20
"""GitLab self-managed's default ``dotenv_variables`` limit (GitLab.com allows 50-150:
https://docs.gitlab.com/administration/instance_limits/#limit-dotenv-variables, gitlab-org/gitlab#411139)."""

_JUNIT_MESSAGE_CHARS = 1_000
_JUNIT_TEXT_CHARS = 16_000
_METRICS_UNAVAILABLE = "metrics not available: the KFP v2beta1 API exposes no metric values (they live in ML Metadata)"


@dataclass(frozen=True, kw_only=True)
class ReportPaths:
    """Where :func:`write_reports` writes; relative paths are relative to the working directory.

    The defaults match the ``artifacts:reports`` of the shipped CI template (``dotenv: .kfp-launch/run.env``,
    ``junit: .kfp-launch/junit.xml``, ``metrics: .kfp-launch/metrics.txt``).

    Attributes:
        dotenv: the dotenv report.
        junit: the JUnit XML report.
        metrics: the metrics report.
    """

    dotenv: Path = Path(".kfp-launch/run.env")
    junit: Path = Path(".kfp-launch/junit.xml")
    metrics: Path = Path(".kfp-launch/metrics.txt")


def write_reports(outcome: RunOutcome, paths: ReportPaths) -> list[Path]:
    """Write the dotenv, JUnit and metrics reports of OUTCOME, creating parent directories.

    Returns:
        The paths written, in the order dotenv, JUnit, metrics.

    Raises:
        OSError: a file cannot be written (the caller decides whether that is fatal).
    """
    contents = (
        (paths.dotenv, render_dotenv(outcome)),
        (paths.junit, render_junit(outcome)),
        (paths.metrics, render_metrics(outcome)),
    )
    for path, text in contents:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    return [path for path, _ in contents]


def write_reports_many(outcomes: list[RunOutcome], paths: ReportPaths) -> list[Path]:
    """Write the reports of several runs (``run JOB JOB ...`` / ``run --all``) to the same three files.

    dotenv: ``KFP_RUN_IDS`` (comma-separated, in job order), ``KFP_RUN_STATES``, the shared
    ``KFP_EXPERIMENT_ID``/``KFP_EXPERIMENT``, then ``KFP_RUN_ID_<JOB>`` per job (upper-cased, other
    characters as ``_``) while GitLab's limits allow; JUnit: one suite per run; metrics: every run's lines.

    Raises:
        OSError: a file cannot be written.
    """
    if len(outcomes) == 1:
        return write_reports(outcomes[0], paths)
    first = outcomes[0]
    variables = {
        "KFP_RUN_IDS": ",".join(o.run_id for o in outcomes if o.run_id),
        "KFP_RUN_STATES": ",".join(o.state for o in outcomes),
        "KFP_EXPERIMENT_ID": first.experiment_id,
        "KFP_EXPERIMENT": first.experiment,
    }
    for outcome in outcomes:
        if outcome.run_id:
            variables["KFP_RUN_ID_" + re.sub(r"[^A-Za-z0-9_]", "_", outcome.job).upper()] = outcome.run_id
    metrics = [line for o in outcomes for line in render_metrics(o).splitlines() if line != "# EOF"]
    contents = (
        (paths.dotenv, _render_dotenv_variables(variables)),
        (paths.junit, render_junit_many(outcomes)),
        (paths.metrics, "\n".join([*metrics, "# EOF"]) + "\n"),
    )
    for path, text in contents:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    return [path for path, _ in contents]


# ---- dotenv ------------------------------------------------------------------------------------------------


def dotenv_variables(outcome: RunOutcome) -> dict[str, str]:
    """The variables of the dotenv report, in priority order, before encoding and limits.

    ``KFP_RUN_ID`` comes first: it is the contract for later jobs, because gitlab-ci-local cuts the
    ``KFP_RUN_URL`` value at its ``#`` (KFP UI links are ``.../#/runs/details/<id>``; docs/gitlab-notes.md,
    'dotenv reports').
    Empty values are left out rather than written as ``KEY=``: a local run has no run id, run URL or
    experiment id, and an absent variable is what ``[ -n "$KFP_RUN_ID" ]`` and ``${KFP_RUN_ID:?}``
    in a later job test for.
    """
    candidates = {
        "KFP_RUN_ID": outcome.run_id,
        "KFP_RUN_STATE": outcome.state,
        "KFP_RUN_URL": outcome.run_url,
        "KFP_EXPERIMENT_ID": outcome.experiment_id,
        "KFP_EXPERIMENT": outcome.experiment,
        # Not KFP_JOB: that is the template's input, and GitLab ranks a dotenv report's variables above a later
        # job's own (docs.gitlab.com/ci/variables/#cicd-variable-precedence), so the next kfp-launch job would
        # run this job's pipeline.
        "KFP_RUN_JOB": outcome.job,
        "KFP_PIPELINE": outcome.pipeline_name,
    }
    return {key: value for key, value in candidates.items() if value}


def render_dotenv(outcome: RunOutcome) -> str:
    """The dotenv report: ``KEY=value`` lines that GitLab's parser and limits accept.

    Rules (https://docs.gitlab.com/ci/yaml/artifacts_reports/#artifactsreportsdotenv and GitLab's parser,
    ``Ci::ParseDotenvArtifactService``; docs/gitlab-notes.md, 'dotenv reports'): keys ``[A-Za-z0-9_]``;
    one ``KEY=value`` per line, no blank or comment lines; no quotes (GitLab keeps them literally); no
    spaces or newlines in values; UTF-8; at most :data:`DOTENV_MAX_BYTES` bytes and
    :data:`DOTENV_MAX_VARIABLES` variables.

    Encoding of values (so every value is representable and the rule is reversible with ``urllib``'s
    ``unquote``): whitespace, control characters, ``%``, quotes, backslash and ``#`` are percent-encoded as
    UTF-8 (an experiment ``my exp #2`` becomes ``my%20exp%20%232``); other Unicode is kept as UTF-8.
    ``KFP_RUN_URL`` keeps its ``#``: real GitLab keeps ``#`` inside values and ``%23`` would change the URL.
    A variable that would push the file past a limit is left out (lowest priority last, see
    :func:`dotenv_variables`), never truncated; ``KFP_RUN_ID`` and ``KFP_RUN_STATE`` are short and always fit.
    """
    return _render_dotenv_variables(dotenv_variables(outcome))


def _render_dotenv_variables(variables: dict[str, str]) -> str:
    lines: list[str] = []
    size = 0
    for key, value in variables.items():
        if not value:
            continue
        line = f"{key}={_dotenv_value(value, keep_hash=key == 'KFP_RUN_URL')}\n"
        line_bytes = len(line.encode("utf-8"))
        if len(lines) >= DOTENV_MAX_VARIABLES or size + line_bytes > DOTENV_MAX_BYTES:
            continue
        lines.append(line)
        size += line_bytes
    return "".join(lines)


def _dotenv_value(value: str, *, keep_hash: bool) -> str:
    return "".join(
        char
        if char.isprintable() and not char.isspace() and char not in "%\"'\\" and (keep_hash or char != "#")
        else quote(char, safe="", errors="replace")  # a lone surrogate (undecodable byte) becomes %3F
        for char in value
    )


# ---- JUnit -------------------------------------------------------------------------------------------------


def render_junit(outcome: RunOutcome) -> str:
    """The JUnit XML report: a ``<testsuites>`` root with one ``<testsuite>`` named after the job.

    One ``<testcase>`` per task (``name`` = task, ``classname`` = job, ``time`` = seconds when known):
    ``FAILED`` gets ``<failure message="<error>">`` with the error, the log tail and the run URL as text
    (GitLab shows that text in the test report: https://docs.gitlab.com/ci/testing/unit_test_reports/);
    ``SKIPPED``, ``CANCELED`` and tasks that never finished get ``<skipped>``. A test case named ``run``
    stands for the run itself when the job fails (``exit_code != 0``: failed, canceled, timed out,
    interrupted, unreachable) but no task is marked failed, so the merge request's test summary always
    says why; it is also added when there are no tasks at all (GitLab ignores a suite without test
    cases), passing, failing or skipped (``DETACHED``: not waited for). The run URL is in its
    ``<system-out>``. Control characters and ANSI colour codes are removed from texts (XML 1.0 cannot
    hold them); a long ``message`` keeps its start (1,000 characters), a long failure text its end
    (16,000 characters: the log's last lines and the run URL).
    """
    return _junit_document([outcome])


def render_junit_many(outcomes: list[RunOutcome]) -> str:
    """The JUnit report of several runs (``run --all``): one ``<testsuite>`` per run, as :func:`render_junit`."""
    return _junit_document(outcomes)


def _junit_document(outcomes: list[RunOutcome]) -> str:
    suites = [_suite(outcome) for outcome in outcomes]
    totals = {
        key: sum(int(suite.get(key, "0")) for suite in suites) for key in ("tests", "failures", "errors", "skipped")
    }
    seconds = sum(float(suite.get("time", "0")) for suite in suites)
    root = ET.Element(
        "testsuites", {"name": "kfp-launch", **{k: str(v) for k, v in totals.items()}, "time": _seconds(seconds)}
    )
    root.extend(suites)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _suite(outcome: RunOutcome) -> ET.Element:
    suite = ET.Element("testsuite", name=_classname(outcome))
    _add_properties(suite, outcome)
    cases = [_task_case(task, outcome) for task in outcome.tasks]
    if _needs_run_case(outcome):
        cases.append(_run_case(outcome))
    suite.extend(cases)
    failures = sum(1 for case in cases if case.find("failure") is not None)
    skipped = sum(1 for case in cases if case.find("skipped") is not None)
    seconds = outcome.duration_s
    if seconds is None:
        seconds = sum(task.duration_s or 0.0 for task in outcome.tasks)
    counts = {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": _seconds(seconds),
    }
    suite.attrib.update(counts)
    return suite


def _add_properties(suite: ET.Element, outcome: RunOutcome) -> None:
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("kfp.run_id", outcome.run_id),
        ("kfp.run_url", outcome.run_url),
        ("kfp.experiment", outcome.experiment),
        ("kfp.pipeline", outcome.pipeline_name),
        ("kfp.state", outcome.state),
    ):
        if value:
            ET.SubElement(properties, "property", name=name, value=plain_text(value))


def _task_case(task: TaskResult, outcome: RunOutcome) -> ET.Element:
    case = ET.Element("testcase", name=plain_text(task.name), classname=_classname(outcome))
    if task.duration_s is not None:
        case.set("time", _seconds(task.duration_s))
    if task.state == RunState.FAILED:
        error = task.error or "task failed (no error message from KFP)"
        failure = ET.SubElement(
            case, "failure", message=_clip_start(plain_text(error), _JUNIT_MESSAGE_CHARS), type="FAILED"
        )
        source = f"last {len(task.log_tail)} log lines of {task.log_source}:\n" if task.log_source else ""
        log = source + "\n".join(task.log_tail) if task.log_tail else ""
        parts = [error, log, f"run: {outcome.run_url}" if outcome.run_url else ""]
        failure.text = _clip_end(plain_text("\n\n".join(part for part in parts if part)), _JUNIT_TEXT_CHARS)
    elif task.state != RunState.SUCCEEDED:
        reason = "skipped" if task.state == RunState.SKIPPED else f"task did not succeed: {task.state}"
        ET.SubElement(case, "skipped", message=reason)
    return case


def _needs_run_case(outcome: RunOutcome) -> bool:
    any_task_failed = any(task.state == RunState.FAILED for task in outcome.tasks)
    return not outcome.tasks or (outcome.exit_code != 0 and not any_task_failed)


def _run_case(outcome: RunOutcome) -> ET.Element:
    case = ET.Element("testcase", name="run", classname=_classname(outcome))
    if outcome.duration_s is not None:
        case.set("time", _seconds(outcome.duration_s))
    message = outcome.message or f"run ended in state {outcome.state}"
    if outcome.exit_code != 0:
        failure = ET.SubElement(
            case,
            "failure",
            message=_clip_start(plain_text(message), _JUNIT_MESSAGE_CHARS),
            type=outcome.state,
        )
        failure.text = plain_text(f"{message}\nstate: {outcome.state}\nrun: {outcome.run_url or '(none)'}")
    elif outcome.state != OutcomeState.SUCCEEDED:
        ET.SubElement(case, "skipped", message=plain_text(message))
    if outcome.run_url:
        ET.SubElement(case, "system-out").text = plain_text(outcome.run_url)
    return case


def _classname(outcome: RunOutcome) -> str:
    return plain_text(outcome.job or outcome.pipeline_name)


_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_XML_ILLEGAL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def plain_text(text: str) -> str:
    """TEXT without ANSI escape sequences and the control characters XML 1.0 cannot hold (keeps \\t, \\n).

    For task errors and log tails, which may carry colour codes from the component's output.
    """
    return _XML_ILLEGAL_RE.sub("", _ANSI_RE.sub("", text))


def _clip_start(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_end(text: str, limit: int) -> str:
    """The end of TEXT (a log's last lines matter most), marked when cut."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


# ---- metrics -----------------------------------------------------------------------------------------------


def render_metrics(outcome: RunOutcome) -> str:
    """The metrics report: GitLab metrics-report lines ``name{labels} value`` (Prometheus text style, with
    ``#`` comments GitLab ignores; not strict OpenMetrics), ending in ``# EOF``.

    ``kfp_run_duration_seconds{job="<job>"}`` when the duration is known; then, when
    ``outcome.metrics_available``, one line per :class:`MetricValue`: ``kfp_<name>{job="<job>",task="<task>"} <value>``
    (every line carries the job, so the runs of ``run --all`` stay apart) (plus ``artifact="..."``
    when the same task logs the same name in two artifacts). On Kubeflow the v2beta1 API exposes no metric
    values, so only a ``#`` comment says so: values are never invented.

    Written for GitLab's parser (``Gitlab::Ci::Parsers::Metrics::Generic``): it drops everything from a
    ``#`` to the end of a line and shell-splits the rest, so names are sanitized to
    ``[a-zA-Z_:][a-zA-Z0-9_:]*`` and label values to ``[A-Za-z0-9_.:/-]`` (anything else becomes ``_``).
    Two metrics that sanitize to the same line key keep the last value. Values: Python floats, ``NaN``,
    ``+Inf``, ``-Inf``.
    """
    header = f"kfp-launch {outcome.job}: run {outcome.run_id or '(local)'} {outcome.state}"
    lines = ["# " + " ".join(plain_text(header).split())]
    if outcome.duration_s is not None:
        lines.append(
            f'kfp_run_duration_seconds{{job="{_label_value(outcome.job)}"}} {_metric_number(outcome.duration_s)}'
        )
    if not outcome.metrics_available:
        lines.append(f"# {_METRICS_UNAVAILABLE}")
    else:
        lines.extend(_metric_lines(outcome.job, outcome.metrics))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _metric_lines(job: str, metrics: Iterable[MetricValue]) -> list[str]:
    metrics = list(metrics)
    artifacts: dict[tuple[str, str], set[str]] = {}
    for metric in metrics:
        artifacts.setdefault((metric.task, metric.name), set()).add(metric.artifact)
    values: dict[str, str] = {}
    for metric in metrics:
        labels = {"job": job, "task": metric.task}
        if len(artifacts[(metric.task, metric.name)]) > 1:
            labels["artifact"] = metric.artifact
        label_text = ",".join(f'{key}="{_label_value(value)}"' for key, value in labels.items())
        values[f"{metric_name(metric.name)}{{{label_text}}}"] = _metric_number(metric.value)
    return [f"{key} {value}" for key, value in values.items()]


def metric_name(name: str) -> str:
    """``kfp_`` + NAME with every character outside ``[a-zA-Z0-9_:]`` replaced by ``_``.

    E.g. ``"val accuracy"`` -> ``"kfp_val_accuracy"``; the prefix makes the first character valid.
    """
    return "kfp_" + re.sub(r"[^a-zA-Z0-9_:]", "_", name)


def _label_value(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:/-]", "_", value)


def _metric_number(value: float) -> str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)
