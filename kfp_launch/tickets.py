"""The JIRA ticket of a launch: the issue key and where it was found.

:func:`detect_ticket` takes ``--ticket`` or ``JIRA_TICKET`` as given, else the first match of the
``ticket_pattern`` setting (compiled by :func:`compile_ticket_pattern`) in the branch, the merge-request
title or the commit title. Pure functions: the caller (:class:`kfp_launch.ci_context.CiContext`) reads
the environment and git and passes the texts in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kfp_launch.errors import ConfigError
from kfp_launch.settings import DEFAULT_TICKET_PATTERN

TicketSource = Literal["flag", "JIRA_TICKET", "branch", "merge request title", "commit title"]
"""Where the JIRA ticket was found, in order of precedence."""

# The default pattern lives in settings.py (kept import-light for start-up time).


@dataclass(frozen=True, kw_only=True)
class Ticket:
    """A JIRA issue key and where it was found.

    Attributes:
        key: the key, upper-case, e.g. ``"ABC-12"``.
        source: where it came from (:data:`TicketSource`).
    """

    key: str
    source: TicketSource


def compile_ticket_pattern(pattern: str) -> re.Pattern[str]:
    """Compile the ``ticket_pattern`` setting, case-insensitively.

    Raises:
        ConfigError: the pattern is not a valid regex, or matches the empty string.
    """
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(
            f"ticket_pattern {pattern!r} is not a valid regular expression: {exc}",
            hint=f"use Python regex syntax; the default is {DEFAULT_TICKET_PATTERN!r}",
        ) from exc
    if compiled.search("") is not None:
        raise ConfigError(
            f"ticket_pattern {pattern!r} matches the empty string, so it would find a ticket everywhere",
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
    pattern: re.Pattern[str],
) -> Ticket | None:
    """Find the JIRA ticket: the first source that has one wins.

    Order: ``flag`` (``--ticket``) and ``jira_ticket`` (the ``JIRA_TICKET`` variable) are taken as they
    are (stripped, upper-cased); then the first match of ``pattern`` in the branch, the merge-request
    title and the commit title. The key is the whole match, upper-cased. No key is not an error: None.
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
        match = pattern.search(text) if text else None
        if match is not None:
            return Ticket(key=match.group(0).upper(), source=source)
    return None
