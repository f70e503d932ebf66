"""The workspace lock against real processes: busy, queueing, kill -9 takeover, reentrancy, threads."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from data_catalog.lock import (
    ENV_WAIT,
    FROM_ENV,
    LockHolder,
    WorkspaceBusy,
    WorkspaceLock,
    lock_path,
    parse_wait,
    read_holder,
    wait_from_env,
    workspace_lock,
)
from tests.conftest import PROJECT_ROOT

COMMAND = "sdgan run build-megn --workspace under-test"

# Holds the lock until its stdin closes. "fork": the holder also forks a child that outlives it.
HOLDER = textwrap.dedent("""
    import os, sys, time
    from data_catalog.lock import workspace_lock
    with workspace_lock(sys.argv[1], command=sys.argv[2], wait=0):
        child = 0
        if sys.argv[3] == "fork":
            child = os.fork()
            if child == 0:
                time.sleep(600)
                os._exit(0)
        print("LOCKED", child, flush=True)
        sys.stdin.read()
    print("RELEASED", flush=True)
""")

# Takes the flock by hand and records a holder PID that no longer runs (a child that inherited the fd, or
# a process in another PID namespace, looks like this).
RAW_HOLDER = textwrap.dedent("""
    import fcntl, json, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    record = {"pid": int(sys.argv[2]), "host": os.uname().nodename, "command": "ghost",
              "started_at": "2026-12-02T15:20:11+00:00"}
    os.write(fd, json.dumps(record).encode())
    print("LOCKED", flush=True)
    sys.stdin.read()
""")


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    env.pop(ENV_WAIT, None)
    return env


@contextmanager
def holding(root: Path, mode: str = "plain") -> Iterator[tuple[subprocess.Popen, int]]:
    """A real process holding `root`'s lock; yields it and the PID of its forked child (0 if none)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), COMMAND, mode], cwd=PROJECT_ROOT,
                               env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        line = process.stdout.readline()
        assert line.startswith("LOCKED"), f"holder failed: {line!r} (exit {process.poll()})"
        child = int(line.split()[1])
        yield process, child
    finally:
        for pid in (process.pid, child):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        process.wait()
        for stream in (process.stdin, process.stdout):
            if not stream.closed:  # a test may have closed stdin to let the holder finish
                stream.close()


def test_busy_names_the_holder_pid_and_command(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with holding(root) as (holder, _):
        with pytest.raises(WorkspaceBusy) as caught:
            with workspace_lock(root, wait=0):
                pytest.fail("acquired a lock another process holds")
        message = str(caught.value)
        assert f"workspace {root.resolve()} is in use by PID {holder.pid} ({COMMAND}) since " in message
        assert " UTC; wait for it, or pass --wait SECONDS to queue behind it" in message
        assert caught.value.holder is not None and caught.value.holder.pid == holder.pid
        assert str(pickle.loads(pickle.dumps(caught.value))) == message  # Prefect may carry it across processes
        record = json.loads(lock_path(root).read_text())
        assert record["pid"] == holder.pid and record["command"] == COMMAND
        assert record["host"] == socket.gethostname() and record["started_at"].endswith("+00:00")


def test_wait_queues_behind_the_holder_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "ws"
    with holding(root) as (holder, _):
        threading.Timer(1.0, holder.stdin.close).start()  # the holder finishes after 1 s
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="sdgan.lock"):
            with workspace_lock(root, wait=30, command="second"):
                waited = time.monotonic() - started
                assert read_holder(root) == LockHolder.parse(lock_path(root).read_text())
                assert read_holder(root).pid == os.getpid() and read_holder(root).command == "second"
        assert holder.stdout.readline().startswith("RELEASED")
    assert 0.5 < waited < 20
    waiting = [r for r in caplog.records if r.getMessage().startswith("waiting for workspace")]
    assert len(waiting) == 1 and f"PID {holder.pid}" in waiting[0].getMessage()


def test_wait_gives_up_after_the_timeout(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with holding(root) as (holder, _):
        started = time.monotonic()
        with pytest.raises(WorkspaceBusy, match=f"in use by PID {holder.pid} .*gave up after waiting 0.6 s"):
            WorkspaceLock(root, wait=0.6).acquire()
        assert 0.5 < time.monotonic() - started < 5


def test_kill_9_of_the_holder_frees_the_lock_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "ws"
    with holding(root) as (holder, _):
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="sdgan.lock"):
            with workspace_lock(root, wait=0):
                assert time.monotonic() - started < 1
    assert f"took over a stale lock left by PID {holder.pid}" in caplog.text


def test_a_forked_child_does_not_keep_the_lock_after_its_parent_dies(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with holding(root, "fork") as (holder, child):
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the child still runs ...
        with workspace_lock(root, wait=0):  # ... but closed its copy of the lock fd after the fork
            pass


def test_flock_held_under_a_dead_recorded_pid_is_still_busy(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    path = lock_path(root)
    path.parent.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    raw = subprocess.Popen([sys.executable, "-c", RAW_HOLDER, str(path), str(gone.pid)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert raw.stdout.readline().startswith("LOCKED")
        with pytest.raises(WorkspaceBusy, match=f"PID {gone.pid} \\(ghost\\) since 2026-12-02 15:20:11 UTC "
                                                f"\\(PID {gone.pid} is no longer running"):
            WorkspaceLock(root, wait=0).acquire()
    finally:
        raw.kill()
        raw.communicate()


def test_reentrant_in_one_thread(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with workspace_lock(root, wait=0) as outer:
        with workspace_lock(root, wait=0):  # a flow that runs its stages twice
            with workspace_lock(root / ".." / "ws", wait=0):  # the same workspace spelled another way
                assert outer.held
        probe = subprocess.run([sys.executable, "-c", HOLDER, str(root), COMMAND, "plain"], cwd=PROJECT_ROOT,
                               env=_env(), input="", capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "WorkspaceBusy" in probe.stderr  # the inner exits kept the lock
        assert read_holder(root).pid == os.getpid()
    assert lock_path(root).read_text() == ""  # a clean release leaves no holder behind
    probe = subprocess.run([sys.executable, "-c", HOLDER, str(root), COMMAND, "plain"], cwd=PROJECT_ROOT,
                           env=_env(), input="", capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and "RELEASED" in probe.stdout, probe.stderr


def test_two_threads_of_one_process_serialise(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    events: list[str] = []
    holding_a = threading.Event()
    release_a = threading.Event()

    def a() -> None:
        with workspace_lock(root, wait=0):
            events.append("a in")
            holding_a.set()
            release_a.wait(10)
            events.append("a out")

    def b() -> None:
        with workspace_lock(root, wait=30):
            events.append("b in")

    first = threading.Thread(target=a)
    first.start()
    assert holding_a.wait(10)
    with pytest.raises(WorkspaceBusy, match="another thread of this process"):
        WorkspaceLock(root, wait=0).acquire()
    second = threading.Thread(target=b)
    second.start()
    time.sleep(0.5)
    assert events == ["a in"]  # b waits like another process would
    release_a.set()
    first.join(10)
    second.join(10)
    assert events == ["a in", "a out", "b in"]


def test_wait_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_WAIT, raising=False)
    assert WorkspaceLock(tmp_path).wait == 0
    monkeypatch.setenv(ENV_WAIT, "forever")
    assert WorkspaceLock(tmp_path).wait is None
    assert WorkspaceLock(tmp_path, wait=FROM_ENV).wait is None
    assert WorkspaceLock(tmp_path, wait=3).wait == 3  # an explicit wait wins
    monkeypatch.setenv(ENV_WAIT, "2.5")
    assert WorkspaceLock(tmp_path).wait == 2.5
    monkeypatch.setenv(ENV_WAIT, "soon")
    with pytest.raises(ValueError, match="SDGAN_LOCK_WAIT='soon'"):
        WorkspaceLock(tmp_path)
    assert wait_from_env({ENV_WAIT: ""}) == 0
    assert parse_wait("inf") is None and parse_wait("0") == 0
    with pytest.raises(ValueError, match="--wait='-1'"):
        parse_wait("-1")
