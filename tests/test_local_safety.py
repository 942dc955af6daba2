"""Local runs cannot hurt the launcher: nothing is installed into kfp-launch's environment, unset Optional
parameters are refused by name, secrets reach no file, and errors are named for what they are."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from tests.helpers import RunCli

SIX = importlib.metadata.version("six")

PACKAGES_JOB = """from kfp import dsl


@dsl.component(install_kfp_package=False, packages_to_install=[{requirement!r}])
def use_six() -> str:
    import six
    return six.__version__


@dsl.pipeline
def pipeline() -> str:
    return use_six().output
"""


@pytest.mark.slow
def test_a_package_this_environment_lacks_is_refused_and_nothing_is_installed(run_cli: RunCli, project: Path) -> None:
    wanted = "six==1.16.0" if SIX != "1.16.0" else "six==1.15.0"
    (project / "pipelines" / "pkgs.py").write_text(PACKAGES_JOB.format(requirement=wanted))
    result = run_cli(["run", "pkgs", "--local"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert f"use-six: {wanted} (six {SIX} is installed)" in result.stderr
    assert "loosen the pin" in result.stderr  # never: install the conflicting version over kfp-launch's
    assert importlib.metadata.version("six") == SIX
    assert not (project / ".kfp-launch" / "local").exists()  # nothing ran


@pytest.mark.slow
def test_a_package_this_environment_has_runs_and_stays_as_it_was(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "pkgs.py").write_text(PACKAGES_JOB.format(requirement=f"six=={SIX}"))
    result = run_cli(["run", "pkgs", "--local"], cwd=project)
    assert result.exit_code == 0, result.output
    assert f"Output = {SIX!r}".replace("'", '"') in result.stdout
    assert importlib.metadata.version("six") == SIX


OPTIONAL_JOB = """from typing import Optional

from kfp import dsl


@dsl.component(install_kfp_package=False)
def show(a: Optional[str] = None, b: Optional[int] = None) -> str:
    return f"{a}-{b}"


@dsl.pipeline
def pipeline(a: Optional[str] = None, b: Optional[int] = None, c: int = 1) -> str:
    return show(a=a, b=b).output
"""


def test_unset_optional_parameters_are_refused_by_name_without_a_memory_hint(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "opt.py").write_text(OPTIONAL_JOB)
    result = run_cli(["run", "opt", "--local"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert "the Optional parameter(s) a, b without a value" in result.stderr
    assert "-p a=… -p b=…" in result.stderr
    assert "memory" not in result.output


@pytest.mark.slow
def test_optional_parameters_given_a_value_run(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "opt.py").write_text(OPTIONAL_JOB)
    result = run_cli(["run", "opt", "--local", "-p", "a=x", "-p", "b=2"], cwd=project)
    assert result.exit_code == 0, result.output
    assert 'Output = "x-2"' in result.stdout


SECRET_JOB = """from kfp import dsl


@dsl.component(install_kfp_package=False)
def use(secret: str) -> int:
    print("using", secret, flush=True)
    return len(secret)


@dsl.pipeline
def pipeline(secret: str = "none") -> int:
    return use(secret=secret).output
"""


@pytest.mark.slow
def test_a_secret_passed_as_a_parameter_reaches_no_file(run_cli: RunCli, project: Path) -> None:
    secret = "glpat-l0cal-s3cret-value"
    (project / "pipelines" / "secretive.py").write_text(SECRET_JOB)
    result = run_cli(["run", "secretive", "--local", "--verbose", "-p", f"secret={secret}"], cwd=project,
                     env={"GITLAB_TOKEN": secret})
    assert result.exit_code == 0, result.output
    assert "using [MASKED]" in (next((project / ".kfp-launch" / "local").glob("*/kfp-local.log"))).read_text()
    assert secret not in result.output
    written = [path for path in (project / ".kfp-launch").rglob("*") if path.is_file()]
    assert len(written) >= 4  # the log, the three reports (and kfp.local's outputs)
    for path in written:
        assert secret.encode() not in path.read_bytes(), path


def test_pip_options_that_change_installed_packages_are_refused() -> None:
    from kfp_launch.local_checks import install_problems

    assert install_problems(("--quiet", "--no-warn-script-location", f"six=={SIX}")) == []
    assert install_problems(("--upgrade", f"six=={SIX}")) == ["pip option --upgrade"]
    assert install_problems(("--force-reinstall", "-r", "req.txt")) == ["pip option --force-reinstall", "pip option -r",
                                                                       "req.txt (not installed)"]
    assert install_problems(("--index-url", "https://pypi.example/simple", f"six=={SIX}")) == []


@pytest.mark.slow
def test_a_requirement_whose_extras_are_missing_is_refused() -> None:
    from kfp_launch.local_checks import install_problems

    assert importlib.util.find_spec("socks") is None  # PySocks, the "socks" extra of requests, is not installed
    assert install_problems(("requests[socks]",)) == ["requests[socks] (its extras are not installed)"]
    assert install_problems(("requests",)) == []


NAN_JOB = """from kfp import dsl
from kfp.dsl import Metrics, Output


@dsl.component(install_kfp_package=False)
def score(metrics: Output[Metrics]):
    metrics.log_metric("loss", float("nan"))


@dsl.pipeline
def pipeline():
    score()
"""


@pytest.mark.slow
def test_an_error_of_kfp_local_itself_is_named_with_the_task_not_blamed_on_memory(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "nan.py").write_text(NAN_JOB)
    result = run_cli(["run", "nan", "--local"], cwd=project)
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "failed after task score finished: SerializeToJsonError" in result.stderr
    assert "memory" not in result.output
