"""Usage errors (exit 2): Kubeflow-only options with --local, and flag values out of range or malformed;
rejected before anything runs, without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from tests.helpers import CI, RunCli


@pytest.mark.parametrize("args", [["--dry-run"], ["--no-wait"], ["--host", "http://x"], ["--timeout", "1h"]])
def test_kubeflow_options_with_local_are_usage_errors(run_cli: RunCli, project: Path, args: list[str]) -> None:
    result = run_cli(["run", "good", "--local", *args], cwd=project)
    assert result.exit_code == ExitCode.USAGE
    assert "only applies to runs on Kubeflow" in result.stderr and "drop it," in result.stderr
    assert not (project / ".kfp-launch").exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--poll-interval", "0"], 2), (["--log-lines", "-5"], 2), (["--timeout", "5x"], 2), (["--timeout", "inf"], 2),
     (["--timeout", "0"], 2), (["--ticket-pattern", "("], 2), (["--ticket-projects", "1X"], 2),
     (["--experiment-template", "{nope}"], 2), (["--run-name-template", "{x}"], 2)],
)
def test_bad_flag_values_are_usage_errors(run_cli: RunCli, project: Path, args: list[str], code: int) -> None:
    result = run_cli(["run", "good", *args], cwd=project, env={**CI, "KFP_HOST": "http://127.0.0.1:9"})
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output


def test_a_poll_interval_over_an_hour_is_rejected(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--poll-interval", "1e10"], cwd=project, env={**CI, "KFP_HOST": "http://127.0.0.1:9"})
    assert result.exit_code == ExitCode.USAGE and "at most 1h" in result.stderr


def test_a_zero_timeout_is_refused_before_anything_is_submitted(run_cli: RunCli, project: Path) -> None:
    from tests.fake_kfp import FakeKfpServer
    from tests.helpers import env_for

    with FakeKfpServer() as kfp:
        result = run_cli(["run", "good", "--timeout", "0"], cwd=project, env=env_for(kfp))
        assert result.exit_code == ExitCode.USAGE
        assert "--timeout must be more than zero" in result.stderr
        assert not kfp.requests


def test_ticket_projects_separated_by_commas_are_keys(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["context", "--json", "--ticket-projects", "ML,OPS", "--branch", "fix/ops-12-retry"], cwd=project)
    assert result.exit_code == 0, result.output
    assert '"ticket": "OPS-12"' in result.stdout


def test_a_missing_host_is_said_before_the_plan_is_printed(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good"], cwd=project, env=CI)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "no Kubeflow host: set KFP_HOST" in result.stderr
    assert result.stdout == ""  # no plan, no compile section: the first thing said is what to fix
