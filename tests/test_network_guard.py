"""The suite's network guard: tests may connect to loopback (the fake servers) and nowhere else.

pytest-socket, configured in pyproject.toml (``--allow-hosts=127.0.0.1,::1`` in ``[tool.pytest.ini_options]``
addopts), replaces ``socket.socket.connect`` in the pytest process while each test runs: a connection to any
other address raises ``SocketConnectBlockedError`` before a packet is sent. Not guarded: the subprocesses a
test starts (the CLI under test, gitlab-ci-local and its jobs) and name resolution (``getaddrinfo``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import pytest_socket

ALLOWED_HOSTS = {"127.0.0.1", "::1"}


@pytest.fixture(autouse=True)
def _guard_is_on(pytestconfig: pytest.Config) -> Iterator[None]:
    """Checked before each test here: with the guard off, or allowing more than loopback, the tests below
    would send packets to the network; they error out here instead."""
    assert socket.socket.connect is not pytest_socket._true_connect, "the pytest-socket guard is not active"
    allowed = pytestconfig.getoption("--allow-hosts")
    assert allowed is not None and set(allowed.split(",")) == ALLOWED_HOSTS, f"--allow-hosts={allowed}"
    yield


def test_the_suite_allows_loopback_only(pytestconfig: pytest.Config) -> None:
    allowed = pytestconfig.getoption("--allow-hosts")
    assert allowed is not None and set(allowed.split(",")) == ALLOWED_HOSTS


@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect")  # pytest-socket warns as it raises
@pytest.mark.parametrize(
    ("family", "address"),
    [
        (socket.AF_INET, ("192.0.2.1", 9)),  # TEST-NET-1 (RFC 5737)
        (socket.AF_INET, ("10.255.255.1", 9)),  # private network
        (socket.AF_INET, ("kubeflow.example.com", 443)),  # a name: refused before it is resolved
        (socket.AF_INET6, ("2001:db8::1", 9)),  # documentation prefix (RFC 3849)
    ],
    ids=["test-net", "private", "host-name", "ipv6"],
)
def test_a_connection_to_any_other_address_is_refused_by_the_guard(family: socket.AddressFamily,
                                                                   address: tuple[str, int]) -> None:
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"no {family.name} sockets on this machine")
    with sock:
        sock.settimeout(0.5)
        with pytest.raises(pytest_socket.SocketConnectBlockedError) as refused:
            sock.connect(address)
    assert f'with host "{address[0]}"' in str(refused.value)


@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect")
def test_http_clients_are_refused_too() -> None:
    """``socket.create_connection`` (what http.client and urllib3 call) gets the guard's error, not a timeout."""
    with pytest.raises(pytest_socket.SocketConnectBlockedError):
        socket.create_connection(("192.0.2.1", 9), timeout=0.5)


@pytest.mark.parametrize("host", sorted(ALLOWED_HOSTS))
def test_a_connection_to_loopback_is_allowed(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((host, 0))
    except OSError:
        pytest.skip(f"{host} is not available on this machine")
    with server:
        server.listen(1)
        server.settimeout(5)
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect((host, server.getsockname()[1]))
            accepted, peer = server.accept()
            accepted.close()
    assert peer[0] == host
