"""What a local run (kfp.local) cannot do safely, checked before anything runs: exit 3 with what to do.

- **Packages.** kfp.local's subprocess runner without ``use_venv`` pip-installs each component's
  ``packages_to_install`` into the interpreter running it (``kfp/local/subprocess_task_handler.py``): for
  kfp-launch, its own environment, where it could replace a package kfp-launch uses (and under PEP 668 or
  offline it fails). With ``use_venv=True`` it builds a fresh venv per task in a temporary directory, every
  time. So kfp-launch runs a component locally only when the environment already satisfies all its
  ``packages_to_install``; otherwise it refuses, listing what is missing and how to install it. The prologue
  then installs nothing.
- **Unset ``Optional`` parameters.** kfp.local cannot pass "no value" to a pipeline input that has no default
  (it raises "Unknown value type", kubeflow/pipelines#11667; ``None`` is refused as an argument), while KFP on
  a cluster leaves it out and the component uses its own default. So they are refused, named, with the
  ``-p NAME=…`` that fixes it.
"""

from __future__ import annotations

import importlib.metadata

from kfp_launch.errors import ParameterError, PipelineError
from kfp_launch.models import CompiledPipeline, ResolvedParameters


def check_packages(compiled: CompiledPipeline) -> None:
    """Refuse a pipeline whose components need packages this environment lacks.

    Raises:
        PipelineError: the unsatisfied requirements, by component, and the ``pip install`` that satisfies them.
    """
    from kfp_launch.pipeline_package import packages_to_install

    missing: dict[str, list[str]] = {}
    for executor, requirements in packages_to_install(compiled.package_yaml).items():
        unmet = [r for r in requirements if not is_satisfied(r)]
        if unmet:
            missing[executor.removeprefix("exec-")] = unmet
    if not missing:
        return
    every = sorted({r for reqs in missing.values() for r in reqs})
    listed = "; ".join(f"{component}: {', '.join(reqs)}" for component, reqs in missing.items())
    raise PipelineError(
        f"Job {compiled.job} needs packages this environment does not have ({listed}), and a local run would "
        "pip-install them into kfp-launch's own environment, so nothing was run.",
        hint="install them where kfp-launch runs (pip install "
        + " ".join(repr(r) for r in every)
        + "), or run the job on Kubeflow.",
    )


def is_satisfied(requirement: str) -> bool:
    """Whether this environment satisfies a pip requirement string (a marker that does not apply counts as
    satisfied; a URL or an unparsable requirement does not)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return False
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True
    if parsed.url:
        return False
    try:
        installed = importlib.metadata.version(parsed.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return parsed.specifier.contains(installed, prereleases=True)


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
