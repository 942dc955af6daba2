"""The JIRA ticket of a launch: the issue key and where it was found.

:func:`detect_ticket` takes ``--ticket`` or ``JIRA_TICKET`` as given; else it looks in the branch, then the
merge-request title, then the commit title, by :class:`TicketRules`:

- by default, in the branch a key in JIRA's project-key format, matched case-sensitively:
  ``[A-Z][A-Z0-9_]+-[0-9]+`` not glued to other letters or digits (``feature/ML-42-x`` is ``ML-42``;
  ``chore/bump-kfp-2``, ``feature/gpt-4-prompts``, ``renovate/python-3.12`` have none); in a title only a key
  that opens it (``ML-42: …``, ``[ML-42] …``, ``ML-42 …``), so "Fix UTF-8 decoding" has none;
- with the ``ticket_projects`` setting (``["ML", "OPS"]``), keys of those projects in any case, anywhere;
- with the ``ticket_pattern`` setting, that regex, case-insensitively, anywhere (full control; it wins).

JIRA's key format: docs/gitlab-notes.md, 'JIRA issue keys'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kfp_launch.errors import ConfigError

TicketSource = Literal["flag", "JIRA_TICKET", "branch", "merge request title", "commit title"]
"""Where the JIRA ticket was found, in order of precedence."""

_KEY = r"[A-Z][A-Z0-9_]+-[0-9]+"
_ALONE = r"(?<![^\W_]){key}(?![^\W_])"  # not glued to other letters or digits (any script)
DEFAULT_BRANCH_RULE = re.compile(r"(?<![^\W_])(?P<key>(?a:" + _KEY + r"))(?![^\W_])")
"""A key anywhere in the branch, case-sensitively, not glued to other letters or digits."""
DEFAULT_TITLE_RULE = re.compile(r"^\s*\[?(?P<key>(?a:" + _KEY + r"))\]?(?=[\s:]|$)")
"""A key that opens a title: ``ML-42: …``, ``[ML-42] …``, ``ML-42 …``, or the title alone."""


@dataclass(frozen=True)
class TicketRules:
    """How keys are found: in the branch and in titles (see the module docstring)."""

    branch: re.Pattern[str]
    title: re.Pattern[str]


@dataclass(frozen=True, kw_only=True)
class Ticket:
    """A JIRA issue key and where it was found.

    Attributes:
        key: the key, upper-case, e.g. ``"ABC-12"``.
        source: where it came from (:data:`TicketSource`).
    """

    key: str
    source: TicketSource


def ticket_rules(pattern: str | None = None, projects: tuple[str, ...] = ()) -> TicketRules:
    """The rules for these settings: ``ticket_pattern`` wins, then ``ticket_projects``, then the default.

    Raises:
        ConfigError: the pattern is not a valid regex or matches the empty string; a project key is not
            JIRA's format (a letter, then letters, digits or underscores).
    """
    if pattern:
        compiled = _compile(pattern, "ticket_pattern")
        return TicketRules(branch=compiled, title=compiled)
    if projects:
        bad = [p for p in projects if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", p)]
        if bad:
            raise ConfigError(
                f"ticket_projects holds {', '.join(map(repr, bad))}, which is not a JIRA project key.",
                hint='list project keys, e.g. ticket_projects = ["ML", "OPS"].',
            )
        keys = "|".join(re.escape(p) for p in projects)
        compiled = _compile(_ALONE.format(key=rf"(?P<key>(?a:(?:{keys})-[0-9]+))"), "ticket_projects")
        return TicketRules(branch=compiled, title=compiled)
    return TicketRules(branch=DEFAULT_BRANCH_RULE, title=DEFAULT_TITLE_RULE)


def _compile(pattern: str, setting: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(
            f"{setting} {pattern!r} is not a valid regular expression: {exc}",
            hint="use Python regex syntax, e.g. '(?:ABC|OPS)-\\d+', or leave it unset for JIRA's key format",
        ) from exc
    if compiled.search("") is not None:
        raise ConfigError(
            f"{setting} {pattern!r} matches the empty string, so it would find a ticket everywhere",
            hint=r"match a whole key, e.g. '(?:ABC|OPS)-\d+'",
        )
    return compiled


def detect_ticket(
    *,
    flag: str | None,
    jira_ticket: str | None,
    branch: str | None,
    merge_request_title: str | None,
    commit_title: str | None,
    rules: TicketRules,
) -> Ticket | None:
    """Find the JIRA ticket: the first source that has one wins.

    Order: ``flag`` (``--ticket``) and ``jira_ticket`` (the ``JIRA_TICKET`` variable) are taken as they
    are (stripped, upper-cased); then the branch (``rules.branch``), the merge-request title and the commit
    title (``rules.title``). The key is the match's ``key`` group (else the whole match), upper-cased. No
    key is not an error: None.
    """
    given: tuple[tuple[TicketSource, str | None], ...] = (("flag", flag), ("JIRA_TICKET", jira_ticket))
    for source, value in given:
        key = (value or "").strip()
        if key:
            return Ticket(key=key.upper(), source=source)
    searched: tuple[tuple[TicketSource, str | None], ...] = (
        ("branch", branch),
        ("merge request title", merge_request_title),
        ("commit title", commit_title),
    )
    for source, text in searched:
        rule = rules.branch if source == "branch" else rules.title
        match = rule.search(text) if text else None
        if match is not None:
            key = match.groupdict().get("key") or match.group(0)
            return Ticket(key=key.upper(), source=source)
    return None
