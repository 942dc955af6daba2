"""The report files: dotenv as GitLab's parser reads it, JUnit as ElementTree reads it, metrics by line."""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import pytest

from kfp_launch.models import MetricValue, RunOutcome, TaskResult
from kfp_launch.reports import (
    DOTENV_MAX_BYTES,
    DOTENV_MAX_VARIABLES,
    ReportPaths,
    metric_name,
    render_dotenv,
    render_junit,
    render_metrics,
    write_reports,
)

RUN_URL = "https://kfp.example.com/#/runs/details/3f1c2a4e-9a7b-4c1d-8e2f-0a1b2c3d4e5f"

KUBEFLOW_FAILED = RunOutcome(
    job="train",
    pipeline_name="iris-training",
    state="FAILED",
    exit_code=6,
    run_id="3f1c2a4e-9a7b-4c1d-8e2f-0a1b2c3d4e5f",
    run_url=RUN_URL,
    experiment_id="e-42",
    experiment="feature-abc-12",
    tasks=(
        TaskResult(name="fetch-dataset", state="SUCCEEDED", duration_s=3.25),
        TaskResult(
            name="build-and-fit",
            state="FAILED",
            duration_s=41.5,
            error="ValueError: learning_rate must be > 0",
            log_tail=("epoch 1", "Traceback ..."),
        ),
        TaskResult(name="evaluate-model", state="SKIPPED"),
    ),
    metrics_available=False,
    parameters={"learning_rate": -1.0},
    duration_s=60.0,
    message="task build-and-fit failed",
)

LOCAL_SUCCEEDED = RunOutcome(
    job="train",
    pipeline_name="iris-training",
    state="SUCCEEDED",
    exit_code=0,
    tasks=(
        TaskResult(name="fetch-dataset", state="SUCCEEDED", duration_s=0.8),
        TaskResult(name="evaluate-model", state="SUCCEEDED", duration_s=0.6),
    ),
    metrics=(
        MetricValue(task="evaluate-model", artifact="metrics", name="accuracy", value=0.955556),
        MetricValue(task="evaluate-model", artifact="metrics", name="val loss/epoch", value=0.12),
    ),
    duration_s=3.5,
    local=True,
)


# ---- helpers: the consumers' rules -------------------------------------------------------------------------


def parse_gitlab_dotenv(text: str) -> dict[str, str]:
    """GitLab's parser (``Ci::ParseDotenvArtifactService``, app/services/ci/parse_dotenv_artifact_service.rb in
    gitlab-org/gitlab): every line ``^(.*?)=(.*)$``, stripped, plus the documented rules
    (https://docs.gitlab.com/ci/yaml/artifacts_reports/#artifactsreportsdotenv; docs/gitlab-notes.md,
    'dotenv reports'); fails the test on any violation."""
    data = text.encode("utf-8")
    assert len(data) <= DOTENV_MAX_BYTES
    assert text.endswith("\n"), "kfp-launch writes whole lines, and at least KFP_RUN_STATE"
    variables: dict[str, str] = {}
    for line in text.splitlines():
        match = re.search(r"^(.*?)=(.*)$", line)
        assert match is not None, f"Invalid Format: {line!r}"
        key, value = match.group(1).strip(), match.group(2).strip()
        assert re.fullmatch(r"[A-Za-z0-9_]+", key), key
        assert line.strip() and not line.startswith("#")
        assert not re.search(r"\s", value) and value == match.group(2), f"space in {value!r}"
        assert not value.startswith(("'", '"')), f"quotes in {value!r}"
        assert value, f"empty value for {key}"
        assert key not in variables, f"duplicate {key}"
        variables[key] = value
    assert len(variables) <= DOTENV_MAX_VARIABLES
    return variables


def parse_junit(text: str) -> ET.Element:
    """The single <testsuite> of a JUnit report, after checking the root's counts equal the suite's."""
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for name in ("tests", "failures", "errors", "skipped", "time"):
        assert root.get(name) == suite.get(name)
    return suite


def cases_by_name(suite: ET.Element) -> dict[str, ET.Element]:
    return {case.get("name", ""): case for case in suite.findall("testcase")}


METRIC_LINE = re.compile(
    r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[a-z_]+="[^"\\\n]*"(?:,[a-z_]+="[^"\\\n]*")*)\})? '
    r"(?P<value>-?[0-9.e+-]+|NaN|[+-]Inf)"
)


def parse_metrics(text: str) -> dict[str, str]:
    """Every non-comment line as ``name{labels} -> value`` (OpenMetrics text), also checking that GitLab's
    parser (strip from ``#``, shellsplit, first word = name) reads the same number."""
    lines = text.splitlines()
    assert lines[-1] == "# EOF"
    result: dict[str, str] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        match = METRIC_LINE.fullmatch(line)
        assert match is not None, line
        gitlab_words = shlex.split(re.sub(r"#.*$", "", line))
        assert gitlab_words[1] == match.group("value")
        result[line.rsplit(" ", 1)[0]] = match.group("value")
    return result


# ---- dotenv ------------------------------------------------------------------------------------------------


def test_dotenv_of_a_kubeflow_run_hands_run_id_url_and_experiment_to_later_jobs() -> None:
    variables = parse_gitlab_dotenv(render_dotenv(KUBEFLOW_FAILED))

    assert variables == {
        "KFP_RUN_ID": "3f1c2a4e-9a7b-4c1d-8e2f-0a1b2c3d4e5f",
        "KFP_RUN_STATE": "FAILED",
        "KFP_RUN_URL": RUN_URL,  # '#' kept: real GitLab keeps it inside a value
        "KFP_EXPERIMENT_ID": "e-42",
        "KFP_EXPERIMENT": "feature-abc-12",
        "KFP_RUN_JOB": "train",
        "KFP_PIPELINE": "iris-training",
    }
    assert next(iter(variables)) == "KFP_RUN_ID"


def test_dotenv_of_a_local_run_leaves_out_the_ids_it_does_not_have() -> None:
    variables = parse_gitlab_dotenv(render_dotenv(LOCAL_SUCCEEDED))

    assert variables == {"KFP_RUN_STATE": "SUCCEEDED", "KFP_RUN_JOB": "train", "KFP_PIPELINE": "iris-training"}


@pytest.mark.parametrize(
    "experiment",
    [
        "my experiment #2",
        "ümlaut-実験 ✓",
        'quoted "name"',
        "'single'",
        "tab\there",
        "line\nbreak",
        "100% done",
        "back\\slash",
        " leading and trailing ",
        "zero\u200bwidth",
    ],
)
def test_dotenv_percent_encodes_what_a_value_cannot_hold(experiment: str) -> None:
    outcome = replace(KUBEFLOW_FAILED, experiment=experiment)

    variables = parse_gitlab_dotenv(render_dotenv(outcome))

    assert unquote(variables["KFP_EXPERIMENT"]) == experiment
    assert "#" not in variables["KFP_EXPERIMENT"]  # gitlab-ci-local would cut the value there


def test_dotenv_survives_an_undecodable_byte_in_a_name() -> None:
    experiment = b"feature-\xff".decode("utf-8", "surrogateescape")  # how os.environ holds a bad byte

    variables = parse_gitlab_dotenv(render_dotenv(replace(KUBEFLOW_FAILED, experiment=experiment)))

    assert variables["KFP_EXPERIMENT"] == "feature-%3F"


def test_dotenv_keeps_unicode_as_utf8() -> None:
    text = render_dotenv(replace(KUBEFLOW_FAILED, experiment="実験-α"))

    assert "KFP_EXPERIMENT=実験-α\n" in text


def test_dotenv_stays_within_gitlab_limits_with_huge_values_and_keeps_the_run_id() -> None:
    outcome = replace(
        KUBEFLOW_FAILED,
        experiment="x y" * 3000,
        job="j" * 2000,
        pipeline_name="p" * 2000,
        run_url=RUN_URL + "?" + "q" * 1500,
    )

    text = render_dotenv(outcome)
    variables = parse_gitlab_dotenv(text)

    assert len(text.encode("utf-8")) <= DOTENV_MAX_BYTES
    assert variables["KFP_RUN_ID"] == KUBEFLOW_FAILED.run_id
    assert variables["KFP_RUN_STATE"] == "FAILED"
    assert "KFP_EXPERIMENT" not in variables  # 15 KB encoded: left out, never truncated


# ---- JUnit -------------------------------------------------------------------------------------------------


def test_junit_has_one_case_per_task_with_the_failing_tasks_error() -> None:
    suite = parse_junit(render_junit(KUBEFLOW_FAILED))
    cases = cases_by_name(suite)

    assert suite.get("name") == "train"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == (
        "3",
        "1",
        "1",
        "0",
    )
    assert float(suite.get("time", "")) == 60.0
    assert list(cases) == ["fetch-dataset", "build-and-fit", "evaluate-model"]  # no extra "run" case
    assert {case.get("classname") for case in cases.values()} == {"train"}
    assert float(cases["fetch-dataset"].get("time", "")) == 3.25
    failure = cases["build-and-fit"].find("failure")
    assert failure is not None
    assert failure.get("message") == "ValueError: learning_rate must be > 0"
    assert "Traceback ..." in (failure.text or "") and RUN_URL in (failure.text or "")
    assert cases["evaluate-model"].find("skipped") is not None
    assert cases["fetch-dataset"].find("failure") is None and cases["fetch-dataset"].find("skipped") is None


@pytest.mark.parametrize("state,exit_code", [("CANCELED", 7), ("TIMED_OUT", 8), ("FAILED", 6)])
def test_junit_adds_a_run_case_when_the_run_failed_but_no_task_did(state: str, exit_code: int) -> None:
    outcome = replace(
        KUBEFLOW_FAILED,
        state=state,
        exit_code=exit_code,
        message=f"run ended {state}",
        tasks=(
            TaskResult(name="fetch-dataset", state="SUCCEEDED", duration_s=1.0),
            TaskResult(name="build-and-fit", state="CANCELED"),
        ),
    )

    suite = parse_junit(render_junit(outcome))
    cases = cases_by_name(suite)

    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    failure = cases["run"].find("failure")
    assert failure is not None and failure.get("message") == f"run ended {state}"
    assert cases["run"].findtext("system-out") == RUN_URL


def test_junit_of_a_run_without_tasks_still_has_a_case() -> None:
    suite = parse_junit(render_junit(replace(LOCAL_SUCCEEDED, tasks=())))

    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("1", "0", "0")
    assert list(cases_by_name(suite)) == ["run"]


def test_junit_of_a_detached_run_marks_the_run_skipped() -> None:
    outcome = replace(KUBEFLOW_FAILED, state="DETACHED", exit_code=0, tasks=(), message="not waited for")

    cases = cases_by_name(parse_junit(render_junit(outcome)))

    assert cases["run"].find("skipped") is not None and cases["run"].find("failure") is None


def test_junit_survives_30_tasks_huge_errors_and_control_characters() -> None:
    tasks = tuple(
        TaskResult(
            name=f"step-{i}",
            state="FAILED" if i % 3 == 0 else "SUCCEEDED",
            duration_s=float(i),
            error=f"\x1b[31mboom {i}\x1b[0m\x00\x07 " + "e" * 50_000,
            log_tail=("\x1b[1mlast line\x1b[0m",),
        )
        for i in range(30)
    )
    outcome = replace(KUBEFLOW_FAILED, tasks=tasks, duration_s=None)

    text = render_junit(outcome)
    suite = parse_junit(text)

    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("30", "10", "0")
    assert float(suite.get("time", "")) == sum(range(30))
    failure = cases_by_name(suite)["step-3"].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("boom 3 eee") and len(failure.get("message", "")) <= 1_000
    assert (failure.text or "").endswith(RUN_URL) and "last line" in (failure.text or "")
    assert "\x1b" not in text and "\x00" not in text
    assert len(text) < 30 * 20_000


# ---- metrics -----------------------------------------------------------------------------------------------


def test_metrics_of_a_local_run_has_one_line_per_value_and_the_duration() -> None:
    metrics = parse_metrics(render_metrics(LOCAL_SUCCEEDED))

    assert metrics == {
        'kfp_run_duration_seconds{job="train"}': "3.5",
        'kfp_accuracy{job="train",task="evaluate-model"}': "0.955556",
        'kfp_val_loss_epoch{job="train",task="evaluate-model"}': "0.12",
    }


def test_metrics_of_a_kubeflow_run_say_they_are_unavailable_and_invent_nothing() -> None:
    text = render_metrics(
        replace(KUBEFLOW_FAILED, metrics=(MetricValue(task="t", artifact="m", name="x", value=1),))
    )

    assert parse_metrics(text) == {'kfp_run_duration_seconds{job="train"}': "60.0"}
    assert "# metrics not available: the KFP v2beta1 API exposes no metric values" in text


def test_metrics_sanitize_names_and_labels_and_separate_artifacts() -> None:
    outcome = replace(
        LOCAL_SUCCEEDED,
        duration_s=None,
        metrics=(
            MetricValue(task='ev"al #1', artifact="a", name="acc", value=float("nan")),
            MetricValue(task='ev"al #1', artifact="b", name="acc", value=float("inf")),
            MetricValue(task="t", artifact="a", name="1st-métrique", value=-2),
        ),
    )

    metrics = parse_metrics(render_metrics(outcome))

    assert metrics == {
        'kfp_acc{job="train",task="ev_al__1",artifact="a"}': "NaN",
        'kfp_acc{job="train",task="ev_al__1",artifact="b"}': "+Inf",
        'kfp_1st_m_trique{job="train",task="t"}': "-2.0",
    }


def test_metric_name_is_a_valid_prometheus_name() -> None:
    assert metric_name("val accuracy") == "kfp_val_accuracy"
    assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", metric_name("9 lives/ü:x"))


# ---- files -------------------------------------------------------------------------------------------------


def test_write_reports_writes_the_three_files_and_creates_directories(tmp_path: Path) -> None:
    paths = ReportPaths(
        dotenv=tmp_path / "a" / "run.env",
        junit=tmp_path / "b" / "c" / "junit.xml",
        metrics=tmp_path / "metrics.txt",
    )

    written = write_reports(KUBEFLOW_FAILED, paths)

    assert written == [paths.dotenv, paths.junit, paths.metrics]
    assert (
        parse_gitlab_dotenv(paths.dotenv.read_text(encoding="utf-8"))["KFP_RUN_ID"] == KUBEFLOW_FAILED.run_id
    )
    assert parse_junit(paths.junit.read_text(encoding="utf-8")).get("failures") == "1"
    assert 'kfp_run_duration_seconds{job="train"} 60.0' in paths.metrics.read_text(encoding="utf-8")


def test_report_paths_default_to_the_ci_template_locations() -> None:
    assert ReportPaths() == ReportPaths(
        dotenv=Path(".kfp-launch/run.env"),
        junit=Path(".kfp-launch/junit.xml"),
        metrics=Path(".kfp-launch/metrics.txt"),
    )


def test_no_report_variable_is_an_input_of_kfp_launch_or_its_templates() -> None:
    from kfp_launch.reports import dotenv_variables, write_reports_many
    from kfp_launch.settings import SPECS

    inputs = {v for spec in SPECS.values() for v in spec.env_vars + spec.fallback_env}
    inputs |= {"KFP_JOB", "KFP_LAUNCH_ARGS", "KFP_TOKEN", "KFP_COOKIE", "KFP_CA_BUNDLE", "KF_PIPELINES_SA_TOKEN_PATH"}
    outcome = RunOutcome(job="train", pipeline_name="p", state="SUCCEEDED", exit_code=0, run_id="r", run_url="u",
                         experiment_id="e", experiment="x")
    names = set(dotenv_variables(outcome))
    assert names and not names & inputs and not any(n.startswith("KFP_LAUNCH_") for n in names)
    import tempfile

    from kfp_launch.reports import ReportPaths
    with tempfile.TemporaryDirectory() as tmp:
        paths = ReportPaths(dotenv=Path(tmp) / "r.env", junit=Path(tmp) / "j.xml", metrics=Path(tmp) / "m.txt")
        write_reports_many([outcome, replace_job(outcome, "explore")], paths)
        many = {line.split("=", 1)[0] for line in paths.dotenv.read_text().splitlines() if "=" in line}
    assert many and not many & inputs


def replace_job(outcome: RunOutcome, job: str) -> RunOutcome:
    import dataclasses

    return dataclasses.replace(outcome, job=job, run_id=job)
