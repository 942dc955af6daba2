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


def fit_lines(
    choices: Sequence[Sequence[str]],
    *,
    limit: int = TEXT_COLUMN_CHARS,
    separator: str = "\n",
    upgrade_order: Sequence[int] | None = None,
) -> str:
    """Join one variant of each item, in order, within ``limit`` characters.

    Each item lists its variants from the fullest to the shortest (``""`` last: the item may be left out).
    First every item gets its shortest variant that fits, in order, so compact facts come before links;
    then each item, in ``upgrade_order`` (default: in order), gets its fullest variant that still fits (its
    link, a title). The items keep their order in the result.

    Args:
        choices: per item, its variants; the first item's shortest variant must fit.
        limit: the most characters of the result.
        separator: between items.
        upgrade_order: item indexes, most wanted first, for the second pass.

    Raises:
        ValueError: the first item fits in none of its variants.
    """
    variants = [[bmp_only(v) for v in item] for item in choices]
    chosen: list[str] = [""] * len(variants)

    def length(texts: list[str]) -> int:
        kept = [t for t in texts if t]
        return sum(map(len, kept)) + len(separator) * max(len(kept) - 1, 0)

    for index, item in enumerate(variants):
        shortest = item[-1]  # "" for an item that may be left out: it waits for the second pass
        if shortest and length([*chosen[:index], shortest, *chosen[index + 1 :]]) <= limit:
            chosen[index] = shortest
        elif index == 0:
            raise ValueError(f"{item[0]!r} does not fit in {limit} characters")
    for index in upgrade_order if upgrade_order is not None else range(len(variants)):
        for variant in variants[index]:
            if variant and length([*chosen[:index], variant, *chosen[index + 1 :]]) <= limit:
                chosen[index] = variant
                break
    return separator.join(text for text in chosen if text)


def run_description(compiled: CompiledPipeline, ci: CiContext, key: str, *, jira_url: str | None) -> str:
    """The run's description: its key first, then the job, commit, merge request, CI job, ticket, branch, CI
    pipeline and who triggered it; at most 255 characters. Facts come first; then, as room allows, the
    links back to the merge request and the CI job, the ticket's link, the commit title, the module, the
    branch link and the CI pipeline link."""
    url = ci.project_url
    ref_kind = "Tag" if ci.ref_kind == "tag" else "Branch"
    ticket_link = f" {jira_url.rstrip('/')}/browse/{ci.ticket}" if jira_url and ci.ticket else ""
    title = f' "{ci.commit_title}"' if ci.commit_title else ""
    mr = f"Merge request: !{ci.merge_request_iid}"
    job = f"job {compiled.job}"
    # (variants, how wanted its fullest form is: lower first); the order here is the order of the lines.
    items: list[tuple[list[str], int]] = [
        ([KEY_PREFIX + key], 0),
        ([f"Launched by kfp-launch: {job} ({compiled.module}:{compiled.function})", job], 5),
    ]
    if ci.commit_sha:
        items.append(([f"Commit: {ci.commit_sha}{title}", f"Commit: {ci.commit_sha}"], 4))
    if ci.merge_request_iid:
        items.append(([f"{mr} {ci.merge_request_url}" if ci.merge_request_url else mr, mr], 1))
    if ci.job_url:
        items.append(([f"GitLab job: {ci.job_url}", ""], 2))
    if ci.ticket:
        items.append(([f"Ticket: {ci.ticket}{ticket_link}", f"Ticket: {ci.ticket}"], 3))
    if ci.ref:
        link = f" {url}/-/tree/{ci.ref}" if url else ""
        items.append(([f"{ref_kind}: {ci.ref}{link}", f"{ref_kind}: {ci.ref}"], 6))
    if ci.pipeline_url:
        items.append(([f"GitLab pipeline: {ci.pipeline_url}", ""], 7))
    if ci.user_login or ci.user_name:
        items.append(([f"Triggered by: {ci.user_login or ci.user_name}"], 8))
    order = sorted(range(len(items)), key=lambda index: items[index][1])
    return fit_lines([variants for variants, _ in items], upgrade_order=order)


KFP_LAUNCH_MARK = "runs launched by kfp-launch"
"""Ends every experiment description kfp-launch writes (how it knows an experiment is its own)."""


def describes_ref(description: str, ref_label: str) -> bool:
    """Whether an experiment description is kfp-launch's for this branch or tag (``ref_label``:
    ``branch feature/x``); a long branch name may have been cut with ``…`` to fit."""
    parts = description.split(" · ")
    if not parts or parts[-1] != KFP_LAUNCH_MARK:
        return False
    return any(part == ref_label or (part.endswith("…") and ref_label.startswith(part[:-1])) for part in parts)


def experiment_description(ci: CiContext, *, jira_url: str | None) -> str:
    """The experiment's description: JIRA ticket (a link with ``JIRA_URL``), branch, project; at most 255
    characters (links dropped first)."""
    choices: list[list[str]] = []
    if ci.ticket:
        link = f" {jira_url.rstrip('/')}/browse/{ci.ticket}" if jira_url else ""
        choices.append([f"JIRA {ci.ticket}{link}", f"JIRA {ci.ticket}"])
    ref = f"{'tag' if ci.ref_kind == 'tag' else 'branch'} {ci.experiment_ref}"
    choices.append([ref, ref[:120] + "…"])
    if ci.project_path:
        project = f"project {ci.project_path}"
        choices.append([f"{project} {ci.project_url}" if ci.project_url else project, project])
    choices.append([KFP_LAUNCH_MARK])
    return fit_lines(choices, separator=" · ")
