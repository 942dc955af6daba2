"""A local package index for the bare-runner and publish tests: pypiserver (from PyPI) on 127.0.0.1, serving
directories of wheels over PyPI's simple API and taking twine uploads into the first, without authentication."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def package_index(*directories: Path) -> Iterator[str]:
    """Serve DIRECTORIES; yields the server's base URL (``<url>/simple/`` is the index pip reads).

    Raises:
        RuntimeError: the server did not start listening within 10 seconds.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "pypi-server"), "run", "--host", "127.0.0.1", "--port", str(port),
         "--authenticate", ".", "--passwords", ".", *map(str, directories)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("pypiserver did not start") from None
                time.sleep(0.05)  # the server process is starting: there is no event to wait on
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
