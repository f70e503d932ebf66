"""Shared fixtures. Prefect tests talk to a real `prefect server start` on 127.0.0.1 (SQLite in a temp home)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Prefect reads its settings when first imported: isolate it before any test module imports it.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="sdgan-prefect-home-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_UI_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGINT the process group, then SIGKILL it by PID if it lingers (Prefect runners can)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=grace)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect API server on loopback for the whole session; PREFECT_API_URL points at it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = tmp_path_factory.mktemp("prefect-server") / "server.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PREFECT_API_URL": url},
            start_new_session=True,
        )
    try:
        wait_http_ok(f"{url}/health", timeout=120, process=process)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"Prefect server did not start:\n{log.read_text(errors='replace')[-4000:]}") from None
    os.environ["PREFECT_API_URL"] = url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
        _drain_prefect_clients()
    os.environ.pop("PREFECT_API_URL", None)
    stop_process(process)


def _drain_prefect_clients() -> None:
    """Flush Prefect's background log and event senders while the server is still up.

    Otherwise they retry against a stopped server at interpreter exit, for over a minute.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


@pytest.fixture
def workspace(tmp_path: Path):
    from data_catalog import Workspace

    return Workspace(tmp_path / "ws")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.crawl_corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def _no_duplicate_log_handlers() -> Iterator[None]:
    """Keep each handler on the root logger once.

    A test that reconfigures logging in-process (Prefect's or Dask's set-up) while pytest's capture handler is
    attached can leave a second reference to that same handler object on the root logger; pytest attaches the
    object again for each phase, and every later `caplog` would then see each record twice (seen in full runs).
    """
    import logging

    root = logging.getLogger()
    root.handlers[:] = list(dict.fromkeys(root.handlers))
    yield
    root.handlers[:] = list(dict.fromkeys(root.handlers))


@pytest.fixture
def log_records() -> Iterator:
    """`log_records("sdgan.train-toy")` -> the list that logger's records go to from now on (INFO and up).

    A handler on the logger itself sees each record once, whatever other tests left on the root logger.
    """
    import logging

    attached: list[tuple[logging.Logger, logging.Handler, int]] = []

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    def attach(name: str) -> list[logging.LogRecord]:
        logger, handler = logging.getLogger(name), Collect()
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return handler.records

    yield attach
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)
