"""The project's own .gitlab-ci.yml under gitlab-ci-local: on a version tag, its build job makes the wheel and sdist
and its publish job uploads them with twine to a package index; here a local pypiserver on 127.0.0.1 stands in for
the GitLab package registry's PyPI API (same upload protocol: docs.gitlab.com/user/packages/pypi_repository). The
release job (CI/CD catalog) is validated as YAML only, and so are the publish job's own registry URL and job-token
credentials: the test points twine at the local index through variables (GitLab ranks them above the job's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fake_kfp import FakeKfpServer
from tests.helpers import REPO_ROOT
from tests.package_index import package_index
from tests.test_bare_runner import _pip_variables, bare_python, index
from tests.test_gitlab_ci_local import _require_tools, commit, gcl

__all__ = ["_require_tools", "bare_python", "index"]  # fixtures shared with the other e2e tests

pytestmark = pytest.mark.timeout(300)
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture
def upload_index(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A package index that takes uploads: (its URL, its packages directory)."""
    packages = tmp_path / "packages"
    packages.mkdir()
    with package_index(packages) as url:
        yield url, packages


@pytest.fixture
def project_repo(tmp_path: Path) -> Path:
    """This project's sources and its .gitlab-ci.yml in a throwaway git repository."""
    dest = tmp_path / "kfp-launch"
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, dest / name)
    shutil.copytree(REPO_ROOT / "kfp_launch", dest / "kfp_launch", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".gitignore").write_text(".gitlab-ci-local/\n__pycache__/\n*.egg-info/\nbuild/\n")
    commit(dest, ".gitlab-ci.yml", (REPO_ROOT / ".gitlab-ci.yml").read_text())
    return dest


def test_a_version_tag_builds_and_uploads_the_wheel_and_sdist(
        project_repo: Path, upload_index: tuple[str, Path], kfp: FakeKfpServer, index: Path,
        bare_python: Path) -> None:
    url, packages = upload_index
    variables = {**_pip_variables(index), "CI_COMMIT_TAG": VERSION, "TWINE_REPOSITORY_URL": url,
                 "TWINE_USERNAME": "nobody", "TWINE_PASSWORD": "unused"}
    result = gcl(project_repo, kfp, "build", "publish", variables=variables, python_bin=bare_python)
    assert result.returncode == 0, result.stdout[-4000:]
    assert sorted(p.name for p in packages.iterdir()) == [f"kfp_launch-{VERSION}-py3-none-any.whl",
                                                          f"kfp_launch-{VERSION}.tar.gz"]
    served = subprocess.run([bare_python / "python", "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                             "--isolated", "--index-url", f"{url}/simple", "--dest", str(project_repo / "got"),
                             f"kfp-launch=={VERSION}"], capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stdout + served.stderr
    assert [p.name for p in (project_repo / "got").iterdir()] == [f"kfp_launch-{VERSION}-py3-none-any.whl"]


def test_a_tag_that_is_not_the_version_uploads_nothing(
        project_repo: Path, upload_index: tuple[str, Path], kfp: FakeKfpServer, index: Path,
        bare_python: Path) -> None:
    url, packages = upload_index
    variables = {**_pip_variables(index), "CI_COMMIT_TAG": "9.9.9", "TWINE_REPOSITORY_URL": url}
    result = gcl(project_repo, kfp, "build", "publish", variables=variables, python_bin=bare_python)
    assert result.returncode == 1
    assert f"tag 9.9.9 is not the version in pyproject.toml ({VERSION})" in result.stdout
    assert list(packages.iterdir()) == []


def test_the_project_pipeline_publishes_only_on_version_tags_and_releases_after_publishing() -> None:
    pipeline = yaml.safe_load((REPO_ROOT / ".gitlab-ci.yml").read_text())
    assert pipeline["publish"]["rules"] == pipeline["release"]["rules"] == [{"if": r"$CI_COMMIT_TAG =~ /^\d+\.\d+\.\d+$/"}]
    assert pipeline["publish"]["variables"] == {
        "TWINE_REPOSITORY_URL": "${CI_API_V4_URL}/projects/${CI_PROJECT_ID}/packages/pypi",
        "TWINE_USERNAME": "gitlab-ci-token", "TWINE_PASSWORD": "${CI_JOB_TOKEN}"}
    assert pipeline["release"]["needs"] == ["publish"]
    assert pipeline["release"]["release"]["tag_name"] == "$CI_COMMIT_TAG"
    check = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci",
                            str(REPO_ROOT / ".gitlab-ci.yml")], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
