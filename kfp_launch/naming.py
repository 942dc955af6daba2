"""Experiment and run display names that Kubeflow stores and finds reliably, whatever the branch holds.

Why each rule (docs/kfp-backend-notes.md, 'Experiment names', unless noted):

- Name lookups go through a ``filter`` query that the server URL-decodes twice (kubeflow/pipelines
  backend/src/apiserver/server/list_request_util.go (2.17.0), ``parseAPIFilter``): ``+`` reads as a space
  and a ``%`` not followed by two hex digits gives HTTP 400. So neither character is kept.
- ``display_name`` is ``varchar(128)`` (backend/src/apiserver/model/experiment.go): MySQL counts
  characters, not bytes, so the limit is 128 characters. Every kept character is in the Basic
  Multilingual Plane (at most 3 UTF-8 bytes), so a name also fits the older 3-byte MySQL ``utf8``
  columns, where 4-byte characters (emoji) fail with 500.
- Control, format (invisible, bidi-overriding), private-use, surrogate and line/paragraph-separator
  characters, non-space whitespace and non-characters are replaced: they are unreadable in the UI.
- The unique index on experiment names is case-insensitive (kubeflow/pipelines#5172, KFP 1.0.4: with
  ``Untitled`` present, creating ``untitled`` fails with 409 while looking it up finds nothing), and
  MySQL's default collation ``utf8mb4_0900_ai_ci`` also ignores accents (kubeflow/pipelines#12379).
  So for experiments, a name with upper-case letters or any non-ASCII character gets the hash suffix
  too: names without a suffix are lower-case ASCII and identical to their source, and names with one
  differ in their ASCII hex suffix.

The rules, in order (:func:`sanitize_display_name`):

1. every run of disallowed characters becomes one ``-``; everything else is kept, ``/`` included;
2. leading and trailing whitespace is stripped;
3. if 1-2 changed anything, the result is longer than ``max_chars``, or (experiments) it has upper-case
   or non-ASCII letters, the result is cut to ``max_chars - 9`` characters, stripped of spaces and dashes
   at both ends, and ``-`` plus the first 8 hex digits of the SHA-256 of the original (UTF-8) is appended
   (only the digits when nothing is left), so different originals stay different.

GitLab's ``CI_COMMIT_REF_SLUG`` is not used: it is lossy without a hash (docs/gitlab-notes.md,
'CI_COMMIT_REF_SLUG is lossy').
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote

from kfp_launch.ci_context import CiContext
from kfp_launch.errors import ConfigError
from kfp_launch.settings import Settings

DEFAULT_EXPERIMENT_TEMPLATE = "{branch}"
"""The default ``experiment_template``: one experiment per branch."""

EXPERIMENT_TEMPLATE_FIELDS = ("branch", "ticket", "project", "ref")
"""The fields an ``experiment_template`` may use."""

MAX_DISPLAY_NAME_CHARS = 128
"""``display_name`` is ``varchar(128)`` in KFP's MySQL schema (kubeflow/pipelines
backend/src/apiserver/model/experiment.go (2.17.0), ``Experiment.Name``)."""

TAG_PREFIX = "tag-"
"""``{branch}`` in a tag pipeline renders as ``tag-<tag>`` (the product's choice: a tag is not a
branch). A branch literally named ``tag-v1`` would share tag ``v1``'s experiment; use ``{ref}`` in
the template, or a distinct template for tag pipelines, if that matters."""

_HASH_HEX_CHARS = 8
_SUFFIX_CHARS = 1 + _HASH_HEX_CHARS
_DISALLOWED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_FIELDS_HINT = "valid fields: " + ", ".join("{" + field + "}" for field in EXPERIMENT_TEMPLATE_FIELDS)


def experiment_name(
    template: str, *, branch: str | None, ticket: str | None, project: str | None, ref: str | None
) -> str:
    """Render ``template`` and sanitise it into a valid, distinct experiment name.

    Args:
        template: the ``experiment_template`` setting, e.g. ``"{branch}"`` or ``"{ticket}"``.
        branch: ``CiContext.branch``; None in a tag pipeline, where ``{branch}`` renders as
            ``tag-<ref>`` (:data:`TAG_PREFIX`).
        ticket: ``CiContext.ticket``; None renders as an empty string.
        project: ``CiContext.project_path`` (``group/project``); None renders as an empty string.
        ref: ``CiContext.ref``, the branch or tag name; None renders as an empty string.

    Returns:
        A name valid for KFP (see the module docstring); different renderings give different names.

    Raises:
        ConfigError: the template is invalid (see :func:`validate_experiment_template`), or renders
            an empty name here (e.g. ``"{ticket}"`` when no ticket was found).
    """
    validate_experiment_template(template)
    values = {
        "branch": branch if branch is not None else (TAG_PREFIX + ref if ref else ""),
        "ticket": ticket or "",
        "project": project or "",
        "ref": ref or "",
    }
    rendered = template.format_map(values)
    if not rendered.strip():
        raise ConfigError(
            f"experiment_template {template!r} renders an empty experiment name "
            f"(branch={branch!r}, ticket={ticket!r}, project={project!r}, ref={ref!r})",
            hint="use a field that is always set, such as {branch}, or pass --ticket KEY",
        )
    return sanitize_display_name(rendered)


def experiment_name_for(ci: CiContext, template: str = DEFAULT_EXPERIMENT_TEMPLATE) -> str:
    """:func:`experiment_name` with the fields taken from ``ci``."""
    branch = ci.experiment_ref if ci.branch is not None else None
    return experiment_name(template, branch=branch, ticket=ci.ticket, project=ci.project_path, ref=ci.experiment_ref)


def hashed_experiment_name(template: str, ci: CiContext) -> str:
    """The experiment name with the hash of the rendered template appended: used when the name as written
    collides under Kubeflow's case- and accent-insensitive comparison with another branch's experiment, and
    the name kfp-launch 0.1 gave every name with upper-case or non-ASCII letters (so it finds those too)."""
    values = {
        "branch": ci.experiment_ref if ci.branch is not None else (TAG_PREFIX + ci.ref if ci.ref else ""),
        "ticket": ci.ticket or "",
        "project": ci.project_path or "",
        "ref": ci.experiment_ref or "",
    }
    return sanitize_display_name(template.format_map(values), suffix=True)


def validate_experiment_template(template: str) -> None:
    """Check the ``experiment_template`` setting: only plain ``{branch}``, ``{ticket}``, ``{project}``,
    ``{ref}`` fields (no format spec or conversion); ``{{`` and ``}}`` are literal braces.

    Raises:
        ConfigError: naming the setting and listing the valid fields.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        message = f"experiment_template {template!r} is not a valid template: {exc}"
        raise ConfigError(message, hint=_FIELDS_HINT) from exc
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in EXPERIMENT_TEMPLATE_FIELDS:
            message = f"experiment_template {template!r} uses unknown field {{{field}}}"
            raise ConfigError(message, hint=_FIELDS_HINT)
        if spec or conversion:
            raise ConfigError(
                f"experiment_template {template!r}: field {{{field}}} takes no format spec or conversion",
                hint=_FIELDS_HINT + "; names are cut to 128 characters automatically",
            )


def sanitize_display_name(
    raw: str, *, max_chars: int = MAX_DISPLAY_NAME_CHARS, case_insensitive_store: bool = False, suffix: bool = False
) -> str:
    """Turn any string into a KFP display name, deterministically and readably.

    Args:
        raw: anything: a rendered template, a run name; any characters, any length.
        max_chars: the longest result, in characters (at least 10).
        case_insensitive_store: True where names must stay distinct under a case- and
            accent-insensitive comparison (experiments: their unique index); then upper-case or
            non-ASCII names get the hash suffix too. Run names need not be unique: leave False.

    Returns:
        A non-empty name of at most ``max_chars`` BMP characters with no ``+``, ``%``, control or
        invisible characters and no surrounding whitespace; ``raw`` unchanged when it already is one
        (and, with ``case_insensitive_store``, is lower-case ASCII); otherwise the cleaned text, cut,
        with ``-`` and 8 hex digits of SHA-256(raw) appended (only the digits if nothing readable is left).
    """
    if max_chars <= _SUFFIX_CHARS:
        raise ValueError(f"max_chars must be more than {_SUFFIX_CHARS}, got {max_chars}")
    cleaned = _replace_disallowed(raw).strip()
    fold_safe = not case_insensitive_store or (cleaned.isascii() and cleaned == cleaned.lower())
    if cleaned and cleaned == raw and len(cleaned) <= max_chars and fold_safe and not suffix:
        return cleaned
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX_CHARS]
    body = cleaned[: max_chars - _SUFFIX_CHARS].strip(" -")
    return f"{body}-{digest}" if body else digest


def _replace_disallowed(raw: str) -> str:
    """Replace every run of characters KFP cannot store or filter reliably with one ``-``."""
    parts: list[str] = []
    in_run = False
    for char in raw:
        allowed = _is_allowed(char)
        if allowed:
            parts.append(char)
        elif not in_run:
            parts.append("-")
        in_run = not allowed
    return "".join(parts)


def _is_allowed(char: str) -> bool:
    code = ord(char)
    if char in "+%" or code > 0xFFFF or 0xFDD0 <= code <= 0xFDEF or code in (0xFFFE, 0xFFFF):
        return False
    if char.isspace():
        return char == " "
    return unicodedata.category(char) not in _DISALLOWED_CATEGORIES


def experiment_for(ci: CiContext, settings: Settings) -> str | None:
    """The experiment name for this context (``experiment_template``), or None without a ref.

    Raises:
        ConfigError: the template is invalid or renders empty.
    """
    validate_experiment_template(settings.experiment_template)
    if ci.ref_kind == "none":
        return None
    return experiment_name_for(ci, settings.experiment_template)


KEY_PREFIX = "kfp-launch-key: "
"""Starts the first line of a kfp-launch run's description: the run's key (see ``submission.py``). Runs of
kfp-launch 0.1 carry it on the last line, in the longer form ``<project>/<CI pipeline>/<CI job>/<job>/<nonce>``."""

KEY_CHARS = 33
"""A key is ``<12 hex: this CI job's attempt at the job>.<12 hex: the run's inputs>.<8 hex nonce>``: fixed
length whatever the project path and job names, so the key line always fits the 255-character description
column of backends up to 2.14 (docs/kfp-backend-notes.md, 'Text columns')."""


def _legacy_key_base(ci: CiContext, job: str) -> str:
    # kfp-launch 0.1: the CI job's full name (url-quoted: it may hold "/" as in "train 1/3") keeps parallel
    # and matrix jobs of one pipeline job apart; the pipeline job keeps the runs of one `run --all` apart.
    ci_job = quote(ci.job_name, safe="") if ci.job_name else "-"
    return f"{ci.project_path or 'local'}/{ci.pipeline_id or 'local'}/{ci_job}/{job}/"


def _attempt(ci: CiContext, job: str) -> str:
    """12 hex digits naming this job in this CI job of this CI pipeline (the same for every retry)."""
    return hashlib.sha256(_legacy_key_base(ci, job).encode("utf-8")).hexdigest()[:12]


def inputs_digest(package_yaml: str, parameters: Mapping[str, object], options: Mapping[str, object]) -> str:
    """12 hex digits of what a run computes: the compiled pipeline, every parameter value and the run options
    that change it (caching, service account, pipeline root). Equal inputs, equal digest."""
    canonical = json.dumps([package_yaml, dict(parameters), dict(options)], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def new_run_key(ci: CiContext, job: str, inputs: str) -> str:
    """A fresh key: ``<attempt>.<inputs>.<nonce>`` (see :data:`KEY_CHARS`)."""
    return f"{_attempt(ci, job)}.{inputs}.{secrets.token_hex(4)}"


def attach_prefixes(ci: CiContext, job: str, inputs: str) -> tuple[str, str] | None:
    """In CI, the key prefixes of this CI job's earlier attempts at the job: ``(same job, same inputs)``, the
    runs a retry takes over, and ``(same job, any inputs)``; None outside CI (a laptop never attaches)."""
    if not (ci.in_ci and ci.pipeline_id):
        return None
    attempt = _attempt(ci, job)
    return f"{attempt}.{inputs}.", f"{attempt}."


def run_key(description: str) -> str | None:
    """The key in a run description (first line; last line for runs of kfp-launch 0.1), or None."""
    lines = description.splitlines()
    for line in lines[:1] + lines[-1:]:
        if line.startswith(KEY_PREFIX):
            return line[len(KEY_PREFIX) :].strip()
    return None


def bmp_only(text: str) -> str:
    """``text`` with every character outside the Basic Multilingual Plane (4 bytes in UTF-8: emoji) replaced
    by U+FFFD: MySQL ``utf8`` (3-byte) columns of older deployments refuse them ("Incorrect string value")."""
    return "".join(char if ord(char) <= 0xFFFF else "\ufffd" for char in text)
