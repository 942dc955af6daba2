"""The branch's experiment: its name as written whenever Kubeflow can hold it, and finding or creating it.

Kubeflow compares experiment names as MySQL's default collation does, ignoring case and accents: lookups by
name match ``Feature/x`` for ``feature/x``, and creating a second one answers 409 (the (name, namespace)
unique index: kubeflow/pipelines ``backend/src/apiserver/model/experiment.go``; #5172). So the name as
written (``naming.experiment_name``) is used when no experiment Kubeflow treats as the same name exists, or
when the one that does was created by kfp-launch for this branch (its description says so). Otherwise, and for
names kfp-launch 0.1 created, the name carries a hash of the branch (``naming.hashed_experiment_name``). The
same branch always maps to the same experiment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kfp_launch.ci_context import CiContext
from kfp_launch.descriptions import describes_ref
from kfp_launch.errors import KfpConflictError
from kfp_launch.models import Experiment
from kfp_launch.naming import experiment_for, hashed_experiment_name
from kfp_launch.settings import Settings


class ExperimentApi(Protocol):
    """What this module needs from the KFP adapter (``kfp_api.KfpApi``)."""

    def find_experiments(self, name: str) -> list[Experiment]: ...
    def create_experiment(self, name: str, description: str) -> Experiment: ...
    def unarchive_experiment(self, experiment_id: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ExperimentNames:
    """The names a branch's experiment may have.

    Attributes:
        written: the name as the branch (template) gives it, made storable.
        hashed: the same with a hash of the branch appended (a collision, or kfp-launch 0.1's name).
        ref_label: how kfp-launch's experiment description names the branch (``branch feature/x``).
    """

    written: str
    hashed: str
    ref_label: str


def experiment_names(ci: CiContext, settings: Settings) -> ExperimentNames | None:
    """The names for this context (``experiment_template``), or None without a branch or tag.

    Raises:
        ConfigError: the template is invalid or renders empty.
    """
    written = experiment_for(ci, settings)
    if written is None:
        return None
    label = f"{'tag' if ci.ref_kind == 'tag' else 'branch'} {ci.experiment_ref}"
    return ExperimentNames(
        written=written, hashed=hashed_experiment_name(settings.experiment_template, ci), ref_label=label
    )


def find_experiment(api: ExperimentApi, names: ExperimentNames) -> tuple[Experiment | None, str]:
    """The branch's experiment if it exists, and else the name it would be created with.

    Returns:
        ``(experiment, name)``: the experiment named as written that kfp-launch created for this branch, or
        the one with the hashed name; else None, with the written name (or the hashed one, when Kubeflow holds
        an experiment it treats as the same name: another branch's, or one kfp-launch did not create).
    """
    same = api.find_experiments(names.written)  # the server's comparison: case and accents ignored
    for experiment in same:
        if experiment.name == names.written and describes_ref(experiment.description, names.ref_label):
            return experiment, names.written
    if names.hashed != names.written:
        for experiment in api.find_experiments(names.hashed):
            if experiment.name == names.hashed:
                return experiment, names.hashed
    return None, names.hashed if same else names.written


def ensure_experiment(
    api: ExperimentApi, names: ExperimentNames, description: str, *, say: Callable[[str], None], lookups: int = 3
) -> Experiment:
    """Find the branch's experiment (:func:`find_experiment`) or create it; unarchive it if archived.

    Two jobs racing to create it end in the same one: a 409 on create means the other won, so we look it up
    again (docs/kfp-backend-notes.md, 'Creating an experiment twice').

    Raises:
        KfpConflictError: the name is still not found after a 409 and ``lookups`` look-ups.
    """
    experiment, name = find_experiment(api, names)
    if experiment is not None:
        say(f'using experiment "{experiment.name}"')
    else:
        if name != names.written:
            say(
                f'an experiment Kubeflow treats as "{names.written}" (case and accents ignored) belongs to another '
                f'branch or was not made by kfp-launch: this branch uses "{name}"'
            )
        try:
            experiment = api.create_experiment(name, description)
            say(f'created experiment "{name}"')
        except KfpConflictError:
            for _ in range(lookups):
                experiment = next((e for e in api.find_experiments(name) if e.name == name), None)
                if experiment is not None:
                    break
            if experiment is None:
                raise
            say(f'experiment "{name}" was just created by another job; using it')
    if experiment.archived:
        api.unarchive_experiment(experiment.experiment_id)
        say(f'experiment "{experiment.name}" was archived: unarchived it')
    return experiment
