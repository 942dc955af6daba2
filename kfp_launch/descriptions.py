"""The text kfp-launch stores on Kubeflow besides names: run and experiment descriptions, made to fit every
backend from KFP 2.0 to 2.17.

Backends up to 2.14 created the run and experiment tables with GORM v1, whose default for a string column
without a size is ``varchar(255)`` (kubeflow/pipelines ``backend/src/apiserver/model/run.go`` and
``model/experiment.go`` at 2.14.0: ``Description`` has no size). Strict MySQL refuses longer text (Error 1406
"Data too long"); non-strict MySQL cuts it silently. Older deployments use 3-byte ``utf8`` columns, which
refuse emoji. So a description here is at most :data:`TEXT_COLUMN_CHARS` characters, all in the Basic
Multilingual Plane, and a run's description starts with its fixed-length key, so no cut can lose it.
See docs/kfp-backend-notes.md, 'Text columns'.
"""

from __future__ import annotations

from collections.abc import Sequence

from kfp_launch.ci_context import CiContext
from kfp_launch.models import CompiledPipeline
from kfp_launch.naming import KEY_PREFIX, bmp_only

TEXT_COLUMN_CHARS = 255
"""The longest description kfp-launch writes, in characters (MySQL ``varchar(255)`` counts characters)."""


def fit_lines(choices: Sequence[Sequence[str]], *, limit: int = TEXT_COLUMN_CHARS, separator: str = "\n") -> str:
    """Join one variant of each item, in order, within ``limit`` characters: each item's first variant that
    still fits (longest first, e.g. with its link, then without), or nothing when none fits.

    Args:
        choices: per item, its variants from the fullest to the shortest; the first item must fit.
        limit: the most characters of the result.
        separator: between items.

    Raises:
        ValueError: the first item fits in none of its variants.
    """
    kept: list[str] = []
    used = -len(separator)
    for variants in choices:
        for variant in (bmp_only(v) for v in variants):
            if used + len(separator) + len(variant) <= limit:
                kept.append(variant)
                used += len(separator) + len(variant)
                break
        else:
            if not kept:
                raise ValueError(f"{variants[0]!r} does not fit in {limit} characters")
    return separator.join(kept)


def run_description(compiled: CompiledPipeline, ci: CiContext, key: str, *, jira_url: str | None) -> str:
    """The run's description: its key first, then (as room allows, links dropped before lines) the job,
    commit, merge request, CI job and pipeline, ticket, branch and who triggered it; at most 255 characters.
    """
    url = ci.project_url
    ref_kind = "Tag" if ci.ref_kind == "tag" else "Branch"
    ticket_link = f" {jira_url.rstrip('/')}/browse/{ci.ticket}" if jira_url and ci.ticket else ""
    choices: list[list[str]] = [
        [KEY_PREFIX + key],
        [f"Launched by kfp-launch: job {compiled.job} ({compiled.module}:{compiled.function})", f"job {compiled.job}"],
    ]
    if ci.commit_sha:
        title = f' "{ci.commit_title}"' if ci.commit_title else ""
        choices.append([f"Commit: {ci.commit_sha}{title}", f"Commit: {ci.commit_sha}"])
    if ci.merge_request_iid:
        mr = f"Merge request: !{ci.merge_request_iid}"
        choices.append([f"{mr} {ci.merge_request_url}" if ci.merge_request_url else mr, mr])
    if ci.job_url:
        choices.append([f"GitLab job: {ci.job_url}"])
    if ci.ticket:
        choices.append([f"Ticket: {ci.ticket}{ticket_link}", f"Ticket: {ci.ticket}"])
    if ci.ref:
        link = f" {url}/-/tree/{ci.ref}" if url else ""
        choices.append([f"{ref_kind}: {ci.ref}{link}", f"{ref_kind}: {ci.ref}"])
    if ci.pipeline_url:
        choices.append([f"GitLab pipeline: {ci.pipeline_url}"])
    if ci.user_login or ci.user_name:
        choices.append([f"Triggered by: {ci.user_login or ci.user_name}"])
    return fit_lines(choices)


def experiment_description(ci: CiContext, *, jira_url: str | None) -> str:
    """The experiment's description: JIRA ticket (a link with ``JIRA_URL``), branch, project; at most 255
    characters (links dropped first)."""
    choices: list[list[str]] = []
    if ci.ticket:
        link = f" {jira_url.rstrip('/')}/browse/{ci.ticket}" if jira_url else ""
        choices.append([f"JIRA {ci.ticket}{link}", f"JIRA {ci.ticket}"])
    ref = f"{'tag' if ci.ref_kind == 'tag' else 'branch'} {ci.ref}"
    choices.append([ref, ref[: TEXT_COLUMN_CHARS - 40] + "…"])
    if ci.project_path:
        project = f"project {ci.project_path}"
        choices.append([f"{project} {ci.project_url}" if ci.project_url else project, project])
    choices.append(["runs launched by kfp-launch"])
    return fit_lines(choices, separator=" · ")
