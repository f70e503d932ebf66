"""The embedded Prefect server dies with the process that started it, even under kill -9 (real processes)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.embedded_server import guard_command
from tests.conftest import PROJECT_ROOT

GONE_WITHIN = 10.0  # seconds from kill -9 of the driver to no server left

# Runs a flow that sleeps (so the embedded server is up), or starts the server from a helper thread that ends
# at once (so PR_SET_PDEATHSIG would have fired too early), then reports the server's PID and port. "pool":
# the flow's tasks sleep in two process-pool workers, each with its own embedded server.
DRIVER = textwrap.dedent("""
    import sys, threading, time
    from flows.embedded_server import guard_worker, install
    assert install(), "install() should patch: no PREFECT_API_URL here"
    from prefect import flow, task
    from prefect.task_runners import ProcessPoolTaskRunner
    from prefect.server.api.server import SubprocessASGIServer

    def report():
        server = SubprocessASGIServer._instances[None]
        print(f"SERVER {server.server_process.pid} {server.port}", flush=True)

    @flow
    def sleeper():
        report()
        time.sleep(600)

    @task
    def nap(i):
        print("NAPPING", flush=True)  # the worker has its Prefect client (and its own embedded server) by now
        time.sleep(600)

    @flow(task_runner=ProcessPoolTaskRunner(max_workers=2, initializer=guard_worker))
    def pooled():
        futures = [nap.submit(i) for i in range(2)]
        report()
        return [future.result() for future in futures]

    if sys.argv[1] == "flow":
        sleeper()
    elif sys.argv[1] == "pool":
        pooled()
    else:
        helper = threading.Thread(target=lambda: SubprocessASGIServer().start())
        helper.start()
        helper.join()
        report()
        time.sleep(600)
""")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # Prefect's 20 s is tight on a busy 2-core box
           "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("PREFECT_API_URL", None)  # the session's prefect_server fixture may have exported one
    env.update(extra)
    return env


# processes: psutil when installed, else /proc ---------------------------------------------------------
def _alive(pid: int) -> bool:
    """Running, not a zombie (a reparented zombie waits for init to reap it but is dead)."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except ImportError:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")
    except Exception:  # psutil.NoSuchProcess
        return False


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat[stat.rfind(")") + 2:].split()[1])
        found, frontier = [], [pid]
        while frontier:
            children = [child for child, parent in parents.items() if parent == frontier[0]]
            found += children
            frontier = frontier[1:] + children
        return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        try:
            import psutil

            return " ".join(psutil.Process(pid).cmdline())
        except Exception:
            return ""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def _driver(mode: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, int, Path]]:
    """Start the driver; yield it with the server's PID and port once the server answers."""
    log = tmp_path / f"driver-{mode}.log"
    with open(log, "wb") as handle:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, mode], cwd=PROJECT_ROOT, env=_env(),
                                  stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    spawned: list[int] = []
    try:
        deadline = time.monotonic() + 180
        naps = 2 if mode == "pool" else 0
        while "SERVER " not in (text := log.read_text(errors="replace")) or text.count("NAPPING") < naps:
            if driver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the driver did not report its server:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        line = next(x for x in log.read_text().splitlines() if x.startswith("SERVER "))
        pid, port = (int(x) for x in line.split()[1:3])
        spawned = _descendants(driver.pid)
        yield driver, pid, port, log
    finally:
        _kill([driver.pid, *spawned])  # nothing of ours outlives the test, whatever it asserted
        driver.wait()


def _assert_all_gone(driver: subprocess.Popen, server_pid: int, port: int, log: Path) -> float:
    """kill -9 the driver, return how long until none of its children is alive and the port is closed."""
    children = _descendants(driver.pid)
    assert server_pid in children
    assert _listening(port)
    os.kill(driver.pid, signal.SIGKILL)
    started = time.monotonic()
    driver.wait()
    while time.monotonic() - started < GONE_WITHIN:
        survivors = [pid for pid in children if _alive(pid)]
        if not survivors and not _listening(port):
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"{GONE_WITHIN} s after kill -9 of the driver, still alive: {survivors}, port {port} listening: "
                f"{_listening(port)}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.prefect_server
def test_server_dies_within_seconds_of_kill_9_of_the_flow_process(tmp_path: Path) -> None:
    with _driver("flow", tmp_path) as (driver, pid, port, log):
        elapsed = _assert_all_gone(driver, pid, port, log)
    assert elapsed < GONE_WITHIN


@pytest.mark.prefect_server
def test_server_started_from_a_thread_outlives_the_thread_but_not_the_process(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG would fire when the starting thread ends; the server must stay up until the process dies."""
    with _driver("thread", tmp_path) as (driver, pid, port, log):
        time.sleep(2)  # the helper thread that started the server ended before the driver reported
        assert _alive(pid) and _listening(port), log.read_text(errors="replace")[-3000:]
        _assert_all_gone(driver, pid, port, log)


@pytest.mark.prefect_server
def test_process_pool_workers_and_their_servers_die_with_the_flow_process(tmp_path: Path) -> None:
    """`guard_worker` as the pool's initializer: orphaned workers and the servers they started go too."""
    with _driver("pool", tmp_path) as (driver, pid, port, log):
        children = _descendants(driver.pid)
        servers = [p for p in children if "flows.embedded_server" in _cmdline(p)]
        assert len(servers) == 3, [_cmdline(p) for p in children]  # the flow's and one per worker
        _assert_all_gone(driver, pid, port, log)


def test_install_leaves_an_explicit_api_url_alone(tmp_path: Path) -> None:
    """With PREFECT_API_URL set no embedded server starts: nothing is patched, Prefect's server is not imported."""
    code = ("import sys; from flows.embedded_server import install, installed; "
            "print(install(), installed(), 'prefect.server.api.server' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env=_env(PREFECT_API_URL="http://127.0.0.1:9/api"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_watchdog_stops_a_process_whose_parent_was_killed(tmp_path: Path) -> None:
    """The guard alone, without Prefect: a child arming the watchdog (no PDEATHSIG) dies with its parent."""
    child = ("import os, time; from flows.embedded_server import start_watchdog; "
             "start_watchdog(os.getppid()); time.sleep(600)")
    parent = (f"import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', {child!r}]); "
              "print(c.pid, flush=True); time.sleep(600)")
    driver = subprocess.Popen([sys.executable, "-c", parent], cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    child_pid = int(driver.stdout.readline())
    try:
        time.sleep(1.5)  # let the child import and arm its watchdog
        assert _alive(child_pid)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + GONE_WITHIN
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child_pid)
    finally:
        driver.stdout.close()
        _kill([driver.pid, child_pid])
        driver.wait()


def test_guard_command_rewrites_only_the_uvicorn_command() -> None:
    args = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--port", "8123"]
    command, env = guard_command(args, {"A": "1"})
    assert command == [sys.executable, "-m", "flows.embedded_server", *args[3:]]
    assert env is not None and env["A"] == "1" and env["SDGAN_EMBEDDED_SERVER_PARENT_PID"] == str(os.getpid())
    assert env["SDGAN_EMBEDDED_SERVER_PDEATHSIG"] == "1"  # called from the main thread
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(PROJECT_ROOT)
    other = [sys.executable, "-m", "something_else"]
    assert guard_command(other, None) == (other, None)
