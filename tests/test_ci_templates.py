"""The CI templates install the kfp-launch this repository is, and KFP_LAUNCH_ARGS is read by kfp-launch itself
with shell-like quoting (so a template never expands it unquoted). The templates' jobs run under gitlab-ci-local
in tests/test_gitlab_ci_local.py; these checks need no e2e tools."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from kfp_launch.cli import with_extra_run_args
from kfp_launch.errors import UsageError
from tests.fake_kfp import FakeKfpServer
from tests.helpers import CI, REPO_ROOT, TOKEN

TEMPLATES = [REPO_ROOT / "ci-templates" / "kfp-launch.gitlab-ci.yml", REPO_ROOT / "templates" / "kfp-launch.yml",
             REPO_ROOT / "templates" / "kfp-launch-toy.yml"]


def _version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_each_template_installs_this_version_of_kfp_launch(template: Path) -> None:
    text = template.read_text()
    pins = re.findall(r'"kfp-launch==([^"]+)"', text)
    assert pins and set(pins) == {_version()}, f"{template.name} pins {pins}, pyproject.toml says {_version()}"
    examples = re.findall(r"kfp-launch(?:-toy)?@(\S+)|ref: (\S+)", text)
    assert {a or b for a, b in examples} <= {_version()}


def test_the_readme_names_this_version_wherever_it_names_one() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    named = re.findall(r"kfp-launch==(\d[\w.]*)|mlops/kfp-launch/kfp-launch(?:-toy)?@(\S+?)[`\s]|ref: (\d\S*)", readme)
    versions = {a or b or c for a, b, c in named}
    assert len(named) >= 6 and versions == {_version()}, versions


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_no_template_expands_kfp_launch_args_or_sets_empty_job_variables(template: Path) -> None:
    text = template.read_text()
    assert "${KFP_LAUNCH_ARGS" not in text and "$KFP_LAUNCH_ARGS" not in text
    documents = [yaml.load(d, Loader=_GitLabLoader) for d in text.split("\n---\n")]
    jobs = documents[-1]
    for name, job in jobs.items():
        assert "before_script" not in job, name  # the install is in script: a user's before_script adds to it
        variables = job.get("variables") or {}
        if template.parent.name == "ci-templates":
            assert all(value != "" for value in variables.values()), name
        else:  # a component's inputs, under their own names: an empty input hides no project variable
            assert all(key.startswith("KFP_LAUNCH_INPUT_") for key in variables), (name, sorted(variables))
        assert not any(re.search(r"\$\{?KFP_JOB\b(?!:-)", line) for line in _lines(job.get("script", []))), name


def test_toy_jobs_always_run_all() -> None:
    classic = yaml.load(TEMPLATES[0].read_text(), Loader=_GitLabLoader)
    assert any(line.endswith("run --all") or " run --all " in line for line in _lines(classic[".kfp-launch-toy"]["script"]))
    toy_jobs = yaml.load(TEMPLATES[2].read_text().split("\n---\n")[1], Loader=_GitLabLoader)
    assert any(line.endswith("run --all") for line in _lines(next(iter(toy_jobs.values()))["script"]))


def test_the_component_asks_for_its_job_name() -> None:
    spec = yaml.safe_load(TEMPLATES[1].read_text().split("\n---\n")[0])
    assert "default" not in spec["spec"]["inputs"]["job-name"]  # "kfp-launch" could never be a pipeline job


def test_kfp_launch_args_join_the_run_command_line_split_like_a_shell() -> None:
    env = {"KFP_LAUNCH_ARGS": "-p 'layers=[64, 32]' -p \"note=a b\" --no-cache"}
    assert with_extra_run_args(["run", "train"], env) == ["run", "train", "-p", "layers=[64, 32]", "-p", "note=a b",
                                                         "--no-cache"]
    assert with_extra_run_args(["--version"], env) == ["--version"]
    assert with_extra_run_args(["-C", "run", "run"], env)[3:] == ["-p", "layers=[64, 32]", "-p", "note=a b", "--no-cache"]
    assert with_extra_run_args(["-C", "run", "jobs"], env) == ["-C", "run", "jobs"]  # a directory named run
    assert with_extra_run_args(["cancel", "--state-file", "s.json"], env) == ["cancel", "--state-file", "s.json"]
    assert with_extra_run_args(["run"], {"KFP_LAUNCH_ARGS": "  "}) == ["run"]
    with pytest.raises(UsageError, match="KFP_LAUNCH_ARGS cannot be split"):
        with_extra_run_args(["run"], {"KFP_LAUNCH_ARGS": "-p 'unclosed"})


def test_a_quoted_value_in_kfp_launch_args_reaches_the_pipeline_as_one_value(kfp: FakeKfpServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CI", "GITLAB_", "KFP_", "JIRA_"))}
    env |= {**CI, "KFP_HOST": kfp.url, "KFP_NAMESPACE": "team-a", "KFP_TOKEN": TOKEN,
            "KFP_LAUNCH_ARGS": "-p 'source=data/my iris.csv' --dry-run"}
    result = subprocess.run([sys.executable, "-m", "kfp_launch", "run", "explore"], cwd=REPO_ROOT / "examples" / "iris",
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'with source="data/my iris.csv"' in result.stdout, result.stdout
    assert "dry run: nothing was changed" in result.stdout
    assert kfp.runs == {}
    unclosed = subprocess.run([sys.executable, "-m", "kfp_launch", "run", "explore"], cwd=REPO_ROOT / "examples" / "iris",
                              env=env | {"KFP_LAUNCH_ARGS": "-p 'unclosed"}, capture_output=True, text=True, timeout=60)
    assert unclosed.returncode == 2
    assert "KFP_LAUNCH_ARGS cannot be split into arguments" in unclosed.stdout + unclosed.stderr
    assert "Traceback" not in unclosed.stdout + unclosed.stderr


class _GitLabLoader(yaml.SafeLoader):
    """PyYAML loader that reads GitLab's ``!reference [job, keyword]`` tag as a plain list."""


_GitLabLoader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))  # type: ignore[arg-type]


def _lines(script: object) -> list[str]:
    """A GitLab script (strings and nested lists) as its flat list of strings."""
    if isinstance(script, str):
        return [script]
    return [line for item in script for line in _lines(item)] if isinstance(script, list) else []
