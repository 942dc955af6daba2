"""What a local run (kfp.local) cannot do safely, checked before anything runs: exit 3 with what to do.

- **Packages.** kfp.local's subprocess runner without ``use_venv`` pip-installs each component's
  ``packages_to_install`` into the interpreter running it (``kfp/local/subprocess_task_handler.py``): for
  kfp-launch, its own environment, where it could replace a package kfp-launch uses (and under PEP 668 or
  offline it fails). With ``use_venv=True`` it builds a fresh venv per task in a temporary directory, every
  time. So kfp-launch runs a component locally only when pip would change nothing: every requirement already
  satisfied here (extras included) and no option that reinstalls or upgrades; otherwise it refuses, saying
  what pip would do. The prologue then installs nothing.
- **Unset ``Optional`` parameters.** kfp.local cannot pass "no value" to a pipeline input that has no default
  (it raises "Unknown value type", kubeflow/pipelines#11667; ``None`` is refused as an argument), while KFP on
  a cluster leaves it out and the component uses its own default. So they are refused, named, with the
  ``-p NAME=…`` that fixes it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import subprocess
import sys

from kfp_launch.errors import ParameterError, PipelineError
from kfp_launch.models import CompiledPipeline, ResolvedParameters

_HARMLESS_OPTIONS = frozenset({"--quiet", "-q", "--no-warn-script-location", "--no-deps", "--no-cache-dir"})
_OPTIONS_WITH_VALUE = frozenset({"-i", "--index-url", "--extra-index-url", "--trusted-host", "-f", "--find-links"})


def check_packages(compiled: CompiledPipeline) -> None:
    """Refuse a pipeline whose components would install or change packages in this environment.

    Raises:
        PipelineError: by component, what pip would do (an option that changes installed packages, such as
            ``--upgrade``; requirements not satisfied here, with the version installed now if any).
    """
    from kfp_launch.pipeline_package import packages_to_install

    problems: dict[str, list[str]] = {}
    for executor, installs in packages_to_install(compiled.package_yaml).items():
        found = [problem for arguments in installs for problem in install_problems(tuple(arguments))]
        if found:
            problems[executor.removeprefix("exec-")] = found
    if not problems:
        return
    listed = "; ".join(f"{component}: {', '.join(found)}" for component, found in problems.items())
    raise PipelineError(
        f"Job {compiled.job} would pip-install into kfp-launch's own environment ({listed}), which a local run "
        "must not change, so nothing was run.",
        hint="install what is missing where kfp-launch runs if it does not conflict with it (a version already "
        "installed is kfp-launch's or your project's: loosen the pin instead), or run the job on Kubeflow.",
    )


@functools.lru_cache(maxsize=64)
def install_problems(arguments: tuple[str, ...]) -> list[str]:
    """What ``pip install ARGUMENTS`` would change here ([] when nothing): options that change installed
    packages, requirements not satisfied (with the version installed now, if any). Requirements with extras
    are asked of pip itself (``pip install --dry-run --no-index --report -``), which knows what they pull in."""
    problems: list[str] = []
    requirements: list[str] = []
    skip = False
    for word in arguments:
        if skip:
            skip = False
        elif word in _OPTIONS_WITH_VALUE:
            skip = True
        elif word.startswith("-"):
            if word not in _HARMLESS_OPTIONS and word.split("=", 1)[0] not in _OPTIONS_WITH_VALUE:
                problems.append(f"pip option {word}")
        else:
            requirements.append(word)
    for requirement in requirements:
        problems += _requirement_problem(requirement)
    return problems


def _requirement_problem(requirement: str) -> list[str]:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return [f"{requirement} (not a requirement kfp-launch can check)"]
    if parsed.marker is not None and not parsed.marker.evaluate():
        return []
    if parsed.url:
        return [f"{requirement} (a URL)"]
    try:
        installed = importlib.metadata.version(parsed.name)
    except importlib.metadata.PackageNotFoundError:
        return [f"{requirement} (not installed)"]
    if not parsed.specifier.contains(installed, prereleases=True):
        return [f"{requirement} ({parsed.name} {installed} is installed)"]
    if parsed.extras and _pip_would_install(requirement):
        return [f"{requirement} (its extras are not installed)"]
    return []


def _pip_would_install(requirement: str) -> bool:
    """Whether pip would install anything for REQUIREMENT here (a dry run that reaches no index)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--no-index",
        "--quiet",
        "--report",
        "-",
        requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        return True  # it needs something no installed distribution provides
    try:
        return bool(json.loads(result.stdout).get("install"))
    except ValueError:
        return True


def check_optional_parameters(compiled: CompiledPipeline, params: ResolvedParameters) -> None:
    """Refuse ``Optional`` pipeline parameters left without a value (see the module docstring).

    Raises:
        ParameterError: naming every such parameter, with the ``-p`` that sets it.
    """
    given = params.as_dict()
    unset = [p for p in compiled.parameters if p.optional and not p.has_default and p.name not in given]
    if unset:
        names = ", ".join(p.name for p in unset)
        raise ParameterError(
            f"Job {compiled.job} leaves the Optional parameter(s) {names} without a value, which kfp.local cannot "
            "run (on Kubeflow the component would use its own default); nothing was run.",
            hint="give them a value: " + " ".join(f"-p {p.name}=…" for p in unset) + ", or run the job on Kubeflow.",
        )
