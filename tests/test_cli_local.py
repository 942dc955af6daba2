"""The CLI end to end on a laptop: jobs, compile, local runs with the real kfp.local, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kfp_launch.errors import ExitCode
from tests.helpers import REPO_ROOT, RunCli, clean_env

ANSI = "\x1b["


def test_help_lists_commands_and_each_option_names_its_variable(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(["run", "--help"], cwd=tmp_path)
    assert result.exit_code == 0
    for variable in ("KFP_LAUNCH_PARAM", "KFP_LAUNCH_PARAMS_FILE", "KFP_LAUNCH_PROFILE", "KFP_LAUNCH_PIPELINES_PACKAGE"):
        assert variable in result.stdout
    top = run_cli(["--help"], cwd=tmp_path)
    for command in ("run", "jobs", "compile", "exit-codes"):
        assert command in top.stdout


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["compile", "--help"], ["jobs", "--help"]])
def test_help_imports_neither_kfp_nor_gitlab(args: list[str]) -> None:
    code = (
        "import sys\nfrom kfp_launch.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit:\n    pass\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kfp', 'gitlab', 'kfp_server_api', 'kubernetes'))\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert "IMPORTED []" in out.stdout, out.stdout[-500:]


def test_jobs_lists_jobs_with_parameters_and_broken_modules(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["jobs", "--json"], cwd=project)
    rows = {row["job"]: row for row in json.loads(result.stdout)}
    assert rows["good"]["parameters"][0] == {"name": "a", "type": "int", "default": 2, "required": False}
    assert rows["good"]["profiles"] == ["big", "toy"]
    assert rows["required"]["parameters"][0] == {"name": "a", "type": "int", "default": None, "required": True}
    assert "KeyError" in rows["broken"]["error"]
    assert "helpers" not in rows  # defines no pipeline of its own: not a job
    assert rows["two:first"]["pipeline"] == "first" and rows["two:second"]["pipeline"] == "second"
    assert result.exit_code == ExitCode.INVALID_INPUT  # a broken module is reported


def test_jobs_with_broken_modules_lists_them_and_says_so_on_stderr(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["jobs"], cwd=project)
    assert result.exit_code == 3
    assert "good-pipeline" in result.stdout
    assert "job modules cannot be imported or compiled: broken, missing_dep, syntax." in result.stderr
    assert "kfp-launch compile broken shows the whole error" in result.stderr


def test_jobs_in_a_clean_project_exits_0(run_cli: RunCli, project: Path) -> None:
    for name in ("broken", "missing_dep", "syntax"):
        (project / "pipelines" / f"{name}.py").unlink()
    result = run_cli(["jobs"], cwd=project)
    assert result.exit_code == 0, result.output
    assert "good-pipeline" in result.stdout and "a: int = 2" in result.stdout


def test_jobs_outside_a_project_is_an_input_error(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(["jobs"], cwd=tmp_path)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "No jobs found" in result.stderr


def test_compile_writes_a_yaml_package(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["compile", "good", "-o", "out/good.yaml"], cwd=project)
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((project / "out" / "good.yaml").read_text())
    assert spec["pipelineInfo"]["name"] == "good-pipeline"
    assert "deploymentSpec" in spec


def test_compile_defaults_to_job_yaml_and_dash_means_stdout(run_cli: RunCli, project: Path) -> None:
    assert run_cli(["compile", "good"], cwd=project).exit_code == 0
    assert yaml.safe_load((project / "good.yaml").read_text())["pipelineInfo"]["name"] == "good-pipeline"
    result = run_cli(["compile", "two:first", "-o", "-"], cwd=project)
    assert yaml.safe_load(result.stdout)["pipelineInfo"]["name"] == "first"


@pytest.mark.parametrize(
    ("job", "fragment"),
    [
        ("nope", 'No job "nope"'),
        ("broken", "KeyError"),
        ("two", "several pipelines"),
        ("two:not_a_pipeline", "is not a pipeline"),
        ("helpers", "defines no @dsl.pipeline"),
    ],
)
def test_compile_errors_exit_3_without_traceback(run_cli: RunCli, project: Path, job: str, fragment: str) -> None:
    result = run_cli(["compile", job], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert fragment in result.stderr
    assert result.stderr.startswith("error:")
    assert "Traceback (most recent call last)" not in result.output
    assert not (project / f"{job}.yaml").exists()


def test_a_module_calling_sys_exit_at_import_is_reported(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "quits.py").write_text("import sys\nsys.exit(0)\n")
    result = run_cli(["run", "quits", "--local"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "SystemExit" in result.stderr


def test_local_run_succeeds_prints_outputs_metrics_and_tasks(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--local", "--param", "a=5", "-p", "label=007"], cwd=project)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "✓ add  SUCCEEDED" in out and "✓ score  SUCCEEDED" in out
    assert "Output = 4.0" in out  # (5 + 3) / 2: the --param reached the component
    assert "score/metrics  total = 8" in out and "half = 4" in out
    assert out.splitlines()[-1].startswith("run good SUCCEEDED in ") and out.endswith("(exit 0)\n")  # the outcome, last
    roots = list((project / ".kfp-launch" / "local").iterdir())
    assert len(roots) == 1 and roots[0].name.startswith("good-")
    log = (roots[0] / "kfp-local.log").read_text()
    assert "label='007' total=8" in log  # the string parameter stayed verbatim


def test_local_run_of_failing_pipeline_exits_6_naming_task_and_error(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "failing", "--local", "-p", "message=kaboom 42"], cwd=project)
    assert result.exit_code == ExitCode.RUN_FAILED
    assert "✗ explode  FAILED" in result.stdout
    assert "ValueError: kaboom 42" in result.stdout
    assert "task explode failed: ValueError: kaboom 42" in result.stderr
    assert ANSI not in result.output
    assert "executor_main.py" not in result.stdout  # kfp's own frames are trimmed from the tail


def test_parameter_errors_exit_3_and_run_nothing(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "required", "--local", "-p", "a=x", "-p", "zz=1"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert '"x" is not an integer' in result.stderr
    assert 'unknown parameter "zz"' in result.stderr
    assert "b: required, no value given" in result.stderr
    assert not (project / ".kfp-launch").exists()


def test_param_without_equals_is_usage_error_exit_2(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--local", "--param", "a"], cwd=project)
    assert result.exit_code == ExitCode.USAGE
    assert "not KEY=VALUE" in result.output
    assert not (project / ".kfp-launch").exists()


def test_param_from_environment_without_equals_is_config_error_exit_3(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--local"], cwd=project, env={"KFP_LAUNCH_PARAM": "a"})
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert 'environment variable KFP_LAUNCH_PARAM "a" is not KEY=VALUE' in result.stderr


def test_non_utf8_params_file_is_an_input_error(run_cli: RunCli, project: Path) -> None:
    (project / "p.yaml").write_bytes(b"label: \xff\xfe\n")
    result = run_cli(["run", "good", "--local", "--params-file", "p.yaml"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT and "not UTF-8" in result.stderr


def test_settings_from_pyproject_and_env_reach_the_run(run_cli: RunCli, project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.kfp-launch]\nlocal_root = "runs"\nparam = ["a=10"]\n')
    result = run_cli(["run", "good", "--local"], cwd=project, env={"KFP_LAUNCH_PARAM": "a=20"})
    assert result.exit_code == 0, result.output
    assert "Output = 11.5" in result.stdout  # env (20 + 3) / 2 beats pyproject
    assert (project / "runs").is_dir()


def test_param_sources_add_up_in_precedence_order(run_cli: RunCli, project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.kfp-launch]\nparam = ["a=10", "b=10", "label=toml"]\n')
    (project / "p.yaml").write_text("b: 20\n")
    result = run_cli(["run", "good", "--local", "--profile", "toy", "--params-file", "p.yaml", "-p", "label=flag"],
                     cwd=project)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[0].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "profile toy" in rows["a"]  # the profile (a=1) beats pyproject's project default
    assert "params file p.yaml" in rows["b"] and "20" in rows["b"]
    assert "--param" in rows["label"] and "flag" in rows["label"]


def test_container_components_cannot_run_locally_exit_3(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "container", "--local"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "Lightweight Python Components" in result.stderr


def test_internal_errors_exit_1_without_traceback(run_cli: RunCli, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp_launch import project as project_module

    def explode(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(project_module, "compile_pipeline", explode)
    result = run_cli(["compile", "good"], cwd=project)
    assert result.exit_code == ExitCode.INTERNAL
    assert "internal error (a bug in kfp-launch): ZeroDivisionError: simulated bug" in result.stderr
    assert "Traceback" not in result.output


def test_exit_codes_command_prints_the_table(run_cli: RunCli, tmp_path: Path) -> None:
    out = run_cli(["exit-codes"], cwd=tmp_path).stdout
    assert "  6  run failed" in out and "143  interrupted by SIGTERM" in out


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_signal_during_a_local_run_exits_128_plus_signal(project: Path, signum: int, code: int) -> None:
    (project / "pipelines" / "slow.py").write_text(
        "from kfp import dsl\n\n\n@dsl.component(install_kfp_package=False)\n"
        "def nap(seconds: int):\n    import time\n    print('napping', flush=True)\n    time.sleep(seconds)\n\n\n"
        "@dsl.pipeline\ndef pipeline(seconds: int = 60):\n    nap(seconds=seconds)\n"
    )
    env = {k: v for k, v in {**os.environ, **clean_env()}.items() if v is not None}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfp_launch", "run", "slow", "--local", "--verbose"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        for line in proc.stderr:  # --verbose echoes kfp.local's output on stderr
            if "napping" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code
    assert f"interrupted by {signal.Signals(signum).name}" in err


def test_a_killed_local_worker_is_a_failed_run_not_an_input_error(project: Path) -> None:
    (project / "pipelines" / "slow.py").write_text(
        "from kfp import dsl\n\n\n@dsl.component(install_kfp_package=False)\n"
        "def nap(seconds: int):\n    import time\n    print('napping', flush=True)\n    time.sleep(seconds)\n\n\n"
        "@dsl.pipeline\ndef pipeline(seconds: int = 60):\n    nap(seconds=seconds)\n"
    )
    env = {k: v for k, v in {**os.environ, **clean_env()}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", "slow", "--local", "--verbose"], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "napping" in line:
                break
        # Only this run's worker: a child of the kfp-launch process started above.
        worker = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "kfp_launch.local_worker"],
                                capture_output=True, text=True).stdout.split()
        assert worker, "the local worker was not found"
        for pid in worker:
            os.kill(int(pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.RUN_FAILED, err
    assert "did not finish: the kfp.local worker was killed by SIGKILL" in err
    assert "SIGKILL usually means the machine ran out of memory" in err  # memory named only for a kill
