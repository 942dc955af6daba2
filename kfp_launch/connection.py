"""How to reach Kubeflow Pipelines: host, namespace, credentials, TLS, proxy, UI links.

Built once from the resolved :class:`Settings` (host, namespace, UI URL: flag > env > pyproject) and
the environment (secrets, CA bundle, proxies: environment only; secrets are never flags).

Facts used (kubeflow/pipelines sdk/python/kfp/client/ and the generated ``kfp_server_api`` at 2.17.0;
docs/kfp-backend-notes.md, 'Client construction' and 'Credentials and TLS'):
- ``kfp.Client`` takes the host from ``KF_PIPELINES_ENDPOINT`` when none is given (``Client.__init__``);
  the ``host`` setting accepts it after ``KFP_HOST`` (see ``settings.py``).
- ``existing_token`` sends a fixed ``authorization: Bearer`` header; a token *file* (projected service
  account tokens rotate) must be read on every request, which ``ServiceAccountTokenVolumeCredentials``
  does (its ``refresh_api_key_hook`` runs before each request, from
  ``Configuration.get_api_key_with_prefix``).
- ``cookies`` is a string placed verbatim in the ``Cookie`` header (Dex/oauth2-proxy sessions).
- the SDK's urllib3 ignores ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` and ``HTTPS_PROXY``/``NO_PROXY``
  (``kfp_server_api/rest.py``, ``RESTClientObject.__init__``): we resolve them here and pass them explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kfp_launch.errors import ConfigError
from kfp_launch.settings import Settings

DEFAULT_TOKEN_FILE_ENV = "KF_PIPELINES_SA_TOKEN_PATH"


@dataclass(frozen=True, kw_only=True)
class Connection:
    """Everything needed to talk to one KFP API server.

    Attributes:
        host: the API base URL, e.g. ``https://kubeflow.example.com/pipeline`` (no trailing ``/``).
        namespace: the Kubeflow profile namespace (multi-user), or '' (single-user).
        token: a bearer token (``KFP_TOKEN``); wins over ``token_file``. Never printed.
        token_file: a file holding the bearer token, re-read on every request.
        cookie: a ``Cookie`` header value (``KFP_COOKIE``). Never printed.
        ca_bundle: a PEM file of CA certificates to verify TLS with (None: certifi's bundle).
        proxy: the proxy URL for this host (from ``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY``).
        ui_url: the base URL of the KFP UI for links (default: ``host``).
        ref_protected: ``CI_COMMIT_REF_PROTECTED`` in CI (None elsewhere): GitLab gives protected CI/CD
            variables only to jobs on protected branches and tags (docs.gitlab.com/ci/variables/#protect-a-cicd-variable).
        sources: where each non-secret value came from, for the start-up summary.
    """

    host: str
    namespace: str = ""
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    cookie: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    proxy: str | None = None
    ui_url: str = ""
    ref_protected: bool | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def auth_kind(self) -> str:
        """A secret-free description of the credentials: ``"token (KFP_TOKEN)"`` etc."""
        kinds = []
        if self.token:
            kinds.append("bearer token (KFP_TOKEN)")
        elif self.token_file:
            kinds.append(f"bearer token file {self.token_file}")
        if self.cookie:
            kinds.append("session cookie (KFP_COOKIE)")
        return ", ".join(kinds) or "none"

    def auth_hint(self) -> str:
        """What to do when Kubeflow refuses the credentials (only said after a refusal: single-user Kubeflow
        needs none)."""
        if self.auth_kind != "none":
            return (
                f"check the credentials ({self.auth_kind}): valid, not expired, and allowed to use namespace "
                f"{self.namespace or '(single-user)'}."
            )
        hint = f"no credentials are set: set KFP_TOKEN (a bearer token), {DEFAULT_TOKEN_FILE_ENV} (a token file) or KFP_COOKIE"
        if self.ref_protected is False:
            hint += (
                ". This ref is not protected, and GitLab gives protected CI/CD variables only to jobs on "
                "protected branches and tags: unprotect the variable, or run on a protected ref"
            )
        return hint + " (README, Connecting to Kubeflow)."

    def run_url(self, run_id: str) -> str:
        """The UI link to a run: ``<ui>/#/runs/details/<id>``; behind the central dashboard
        (``.../_/pipeline``) with the namespace, so multi-user links open in the right profile."""
        return self._ui_link(f"/runs/details/{run_id}")

    def experiment_url(self, experiment_id: str) -> str:
        """The UI link to an experiment."""
        return self._ui_link(f"/experiments/details/{experiment_id}")

    def _ui_link(self, fragment: str) -> str:
        base = (self.ui_url or self.host).rstrip("/")
        if "/_/pipeline" in base and self.namespace:
            # Central dashboard: the iframe route takes the namespace as a query (Kubeflow's dashboard
            # links look like /_/pipeline/?ns=team-a#/runs/details/<id>).
            return f"{base}/?ns={urllib.parse.quote(self.namespace)}#{fragment}"
        return f"{base}/#{fragment}"

    def summary_rows(self) -> list[tuple[str, str, str]]:
        """``(setting, value, source)`` rows for the start-up summary; secrets are never shown."""
        rows = [
            ("host", self.host, self.sources.get("host", "")),
            ("namespace", self.namespace or "(single-user)", self.sources.get("namespace", "")),
            ("auth", self.auth_kind, ""),
            ("CA bundle", self.ca_bundle or "(certifi default)", self.sources.get("ca_bundle", "")),
            ("proxy", _without_userinfo(self.proxy) if self.proxy else "(none)", self.sources.get("proxy", "")),
            ("UI", self.ui_url or self.host, self.sources.get("ui_url", "")),
        ]
        return rows


def _without_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, "***@" + netloc, parts.path, parts.query, parts.fragment))
    return url


def connection_from(settings: Settings, environ: Mapping[str, str]) -> Connection:
    """Resolve the connection from settings and the environment.

    Raises:
        ConfigError: no host (all missing settings named in one message), a host that is not an
            http(s) URL, or a CA bundle / token file that does not exist.
    """
    host, host_source = settings.host or "", settings.sources.get("host", "")
    problems: list[str] = []
    if not host:
        problems.append("no Kubeflow host: set KFP_HOST (or --host, or host under [tool.kfp-launch])")
    else:
        problems += _host_problems(host)
    ca_bundle, ca_source = _first(environ, "KFP_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
    if ca_bundle and "-----BEGIN" in ca_bundle:  # a CI/CD variable of type Variable holding the PEM itself
        ca_bundle, ca_source = _private_file(ca_bundle, ".pem"), f"{ca_source} (PEM text, in a private file)"
    elif ca_bundle and not Path(ca_bundle).is_file():
        problems.append(
            f"the CA bundle {_shown(ca_bundle)} (from {ca_source}) is no file and holds no PEM certificate "
            f"({_FILE_TYPE})"
        )
    token = _get(environ, "KFP_TOKEN")
    if token and _is_file(token):
        problems.append(
            f"KFP_TOKEN holds the path of a file, not a token (a CI/CD variable of type File): make "
            f"it of type Variable, or set {DEFAULT_TOKEN_FILE_ENV} to the file instead"
        )
    token_file = _get(environ, DEFAULT_TOKEN_FILE_ENV)
    if token_file and not token and not _is_file(token_file):
        if "/" in token_file:
            problems.append(f"the token file {_shown(token_file)} (from {DEFAULT_TOKEN_FILE_ENV}) does not exist")
        else:  # the token itself, in a variable of type Variable
            token_file = _private_file(token_file, ".token")
    if problems:
        raise ConfigError(
            "Cannot connect to Kubeflow: " + "; ".join(problems) + ".",
            hint="see README, Connecting to Kubeflow. Nothing was submitted.",
        )
    host = host.rstrip("/")
    proxy, proxy_source = _proxy_for(host, environ)
    return Connection(
        host=host,
        namespace=settings.namespace or "",
        token=token,
        token_file=None if token else token_file,
        cookie=_get(environ, "KFP_COOKIE"),
        ca_bundle=ca_bundle,
        proxy=proxy,
        ui_url=(settings.ui_url or "").rstrip("/"),
        ref_protected={"true": True, "false": False}.get((_get(environ, "CI_COMMIT_REF_PROTECTED") or "").lower()),
        sources={
            "host": host_source,
            "namespace": settings.sources.get("namespace", "default"),
            "ca_bundle": ca_source,
            "proxy": proxy_source,
            "ui_url": settings.sources.get("ui_url", "default"),
        },
    )


_FILE_TYPE = "make this CI/CD variable of type File, or give the path of a PEM file"


def _shown(value: str) -> str:
    """A value named in a message: a short one-line path as it is, anything else (certificate text) never."""
    return value if len(value) < 256 and "\n" not in value and "BEGIN" not in value else "(a long value, not shown)"


def _is_file(value: str) -> bool:
    try:
        return len(value) < 4096 and Path(value).is_file()
    except (OSError, ValueError):
        return False


def _private_file(text: str, suffix: str) -> str:
    """TEXT in a file only this user can read (removed when the process ends); its path."""
    handle, path = tempfile.mkstemp(prefix="kfp-launch-", suffix=suffix)  # mode 0600
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text if text.endswith("\n") else text + "\n")
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _host_problems(host: str) -> list[str]:
    try:
        parts = urllib.parse.urlsplit(host)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return [f'the host "{host}" is not a valid URL ({exc})']
    if parts.scheme not in ("http", "https"):
        return [f'the host "{host}" is not an http(s):// URL']
    if any(char.isspace() for char in host) or not parts.hostname:
        return [f'the host "{host}" has no valid host name']
    if parts.username or parts.password or parts.query:
        # Never print credentials: they would appear in every link and summary. Name the problem only.
        return [
            "the host holds credentials or a query string: put the token in KFP_TOKEN (or KFP_COOKIE), not in the URL"
        ]
    return []


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _first(environ: Mapping[str, str], *names: str) -> tuple[str | None, str]:
    for name in names:
        value = _get(environ, name)
        if value:
            return value, f"env {name}"
    return None, ""


def _proxy_for(host: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The proxy for ``host`` by the usual ``*_PROXY`` variables (either case), honouring ``NO_PROXY``."""
    proxies = {}
    for key, value in environ.items():
        lowered = key.lower()
        if lowered.endswith("_proxy") and value.strip():
            proxies[lowered[: -len("_proxy")]] = value.strip()
    scheme = urllib.parse.urlsplit(host).scheme
    proxy = proxies.get(scheme)
    if not proxy:
        return None, ""
    hostname = urllib.parse.urlsplit(host).netloc
    if _bypassed(hostname, proxies.get("no", "")):
        return None, "NO_PROXY"
    return proxy, f"env {scheme.upper()}_PROXY"


def _bypassed(netloc: str, no_proxy: str) -> bool:
    # urllib.request.proxy_bypass_environment reads os.environ; pass our mapping's value explicitly.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # in CPython's urllib.request, not in typeshed
    return bool(no_proxy) and bool(bypass(netloc, {"no": no_proxy}))
