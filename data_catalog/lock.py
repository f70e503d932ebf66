"""One writer per workspace: an exclusive `flock` on `<workspace>/runs/.lock`, held for a whole run.

Two runs writing one workspace at the same time interleave their catalog appends and CURRENT pointers and
leave a corrupt current dataset, so a process that writes takes this lock first. `flock` belongs to the
open file and the kernel drops it when the holder dies, kill -9 included, so a crashed run never blocks
the next one. The file also records who holds it (JSON: pid, host, command, started_at), only so that a
refused run can say which process to wait for; the flock, not the file's content, decides.

Usage::

    with workspace_lock(ws.root):                  # wait: $SDGAN_LOCK_WAIT, else fail at once if busy
        ...
    with workspace_lock(ws.root, wait=600): ...    # queue behind the holder for up to 10 minutes
    with workspace_lock(ws.root, wait=None): ...   # queue forever

The lock is reentrant in the thread that holds it (a flow that runs stages twice must not deadlock on
itself); another thread of the same process waits like another process would.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from types import TracebackType

LOCK_FILE = Path("runs") / ".lock"
ENV_WAIT = "SDGAN_LOCK_WAIT"
POLL_INTERVAL = 0.2  # seconds between two tries of a busy flock
FOREVER_WORDS = frozenset({"forever", "inf", "infinite", "none"})

logger = logging.getLogger("sdgan.lock")


class _EnvDefault(Enum):
    """Sentinel type: `wait=FROM_ENV` means "what $SDGAN_LOCK_WAIT says, else 0" (an enum so it types well)."""

    FROM_ENV = "from-env"


FROM_ENV = _EnvDefault.FROM_ENV
Wait = float | None | _EnvDefault


class WorkspaceBusy(RuntimeError):
    """Another process (or thread) holds the workspace; the message names it and how to queue behind it."""

    def __init__(self, root: Path, holder: LockHolder | None, waited: float | None, note: str = "") -> None:
        self.root = root
        self.holder = holder
        self.waited = waited
        self.note = note
        who = holder.describe() if holder is not None else "another process (it has not recorded itself yet)"
        if waited:
            advice = f"gave up after waiting {waited:g} s; pass a larger --wait SECONDS, or --wait forever"
        else:
            advice = "wait for it, or pass --wait SECONDS to queue behind it"
        super().__init__(f"workspace {root} is in use by {who}{note}; {advice}")

    def __reduce__(self) -> tuple[type[WorkspaceBusy], tuple[Path, LockHolder | None, float | None, str]]:
        """Picklable with its fields (Prefect may carry a flow's exception across processes)."""
        return (type(self), (self.root, self.holder, self.waited, self.note))


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a workspace lock, as recorded in the lock file."""

    pid: int
    host: str
    command: str
    started_at: str  # UTC, ISO 8601

    @classmethod
    def current(cls, command: str | None = None) -> LockHolder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            command=command if command is not None else " ".join(sys.argv),
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """None for an empty or unreadable record (a clean release empties it; a holder may not have written yet)."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]), str(data["started_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    def since(self) -> str:
        try:
            return datetime.fromisoformat(self.started_at).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            return self.started_at

    def describe(self) -> str:
        host = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"PID {self.pid}{host} ({self.command}) since {self.since()}"

    def is_alive(self) -> bool:
        """Whether the recorded process still runs; a holder on another host is assumed alive (we cannot tell)."""
        if self.host != socket.gethostname():
            return True
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped by its parent) counts as dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")


def wait_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """$SDGAN_LOCK_WAIT as a wait: seconds, or "forever" (None); unset or empty means 0 (fail at once)."""
    text = (os.environ if environ is None else environ).get(ENV_WAIT, "").strip()
    return parse_wait(text, source=ENV_WAIT) if text else 0.0


def parse_wait(text: str, source: str = "--wait") -> float | None:
    """"forever" (or inf/none) -> None; a number of seconds >= 0 -> float. For the CLI's --wait too."""
    if text.strip().lower() in FOREVER_WORDS:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{source}={text!r}: expected a number of seconds or 'forever'") from None
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"{source}={text!r}: expected a number of seconds >= 0 or 'forever'")
    return None if math.isinf(seconds) else seconds


def lock_path(root: str | Path) -> Path:
    return Path(root).expanduser().resolve() / LOCK_FILE


def read_holder(root: str | Path) -> LockHolder | None:
    """The holder recorded in a workspace's lock file (None if none), e.g. for `sdgan catalog ls`."""
    try:
        return LockHolder.parse(lock_path(root).read_text(encoding="utf-8"))
    except OSError:
        return None


# per-process state --------------------------------------------------------------------------------
class _Entry:
    """This process's hold on one workspace: which thread, how deep, and the fd carrying the flock."""

    def __init__(self) -> None:
        self.gate = threading.Lock()  # one thread of this process at a time tries for or holds the flock
        self.owner: int | None = None  # thread ident of the holder
        self.depth = 0
        self.fd: int | None = None


_registry: dict[Path, _Entry] = {}
_registry_lock = threading.Lock()


def _entry(root: Path) -> _Entry:
    with _registry_lock:
        return _registry.setdefault(root, _Entry())


def _forget_after_fork() -> None:
    """A forked child does not hold its parent's workspaces: close the inherited fds (else an orphaned child
    keeps the flock after the parent dies) and start with an empty registry."""
    global _registry, _registry_lock
    for entry in _registry.values():
        if entry.fd is not None:
            try:
                os.close(entry.fd)
            except OSError:
                pass
    _registry = {}
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# the lock -----------------------------------------------------------------------------------------
class WorkspaceLock:
    """An exclusive, reentrant lock on one workspace; use `with`, or `acquire()` / `release()`.

    `wait`: 0 raises `WorkspaceBusy` at once if busy, N seconds queues behind the holder for up to N,
    None queues forever, `FROM_ENV` (the default) reads $SDGAN_LOCK_WAIT (seconds or "forever"; else 0).
    `command` is what the lock file records as the holder's command line (default: sys.argv joined).
    """

    def __init__(self, root: str | Path, *, command: str | None = None, wait: Wait = FROM_ENV) -> None:
        self.root = Path(root).expanduser().resolve()
        self.path = self.root / LOCK_FILE
        self.command = command
        self.wait: float | None = wait_from_env() if wait is FROM_ENV else wait
        if self.wait is not None and not self.wait >= 0:
            raise ValueError(f"wait={wait!r}: expected seconds >= 0, None (forever) or FROM_ENV")
        if self.wait is not None and math.isinf(self.wait):
            self.wait = None
        self._held_by: tuple[int, int] | None = None  # (pid, thread) of this object's acquire

    def __repr__(self) -> str:
        return f"WorkspaceLock({str(self.root)!r}, wait={self.wait!r})"

    @property
    def held(self) -> bool:
        return self._held_by == (os.getpid(), threading.get_ident())

    def acquire(self) -> WorkspaceLock:
        if self._held_by is not None:
            raise RuntimeError(f"{self!r} is already acquired; take a new WorkspaceLock to nest")
        entry = _entry(self.root)
        me = threading.get_ident()
        if entry.owner == me:  # only this thread ever sets owner to its own ident, so no race here
            entry.depth += 1
            self._held_by = (os.getpid(), me)
            return self
        deadline = None if self.wait is None else time.monotonic() + self.wait
        announced = False
        if not entry.gate.acquire(blocking=False):
            if self.wait == 0:
                raise WorkspaceBusy(self.root, read_holder(self.root), 0, " (another thread of this process)")
            announced = self._announce_wait(read_holder(self.root), " (another thread of this process)")
            timeout = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            if not entry.gate.acquire(timeout=timeout):
                raise WorkspaceBusy(self.root, read_holder(self.root), self.wait, " (another thread of this process)")
        try:
            fd = self._flock(deadline, announced)
        except BaseException:
            entry.gate.release()
            raise
        entry.fd, entry.owner, entry.depth = fd, me, 1
        self._held_by = (os.getpid(), me)
        return self

    def release(self) -> None:
        """Undo one acquire; the last one of the thread empties the record and drops the flock."""
        held_by, self._held_by = self._held_by, None
        if held_by is None:
            raise RuntimeError(f"{self!r} is not acquired")
        if held_by[0] != os.getpid():
            return  # acquired by the parent before a fork; the child's copy holds nothing
        entry = _entry(self.root)
        if entry.owner != held_by[1]:
            raise RuntimeError(f"{self!r} released by thread {threading.get_ident()}, not the one that acquired it")
        entry.depth -= 1
        if entry.depth > 0:
            return
        fd, entry.fd, entry.owner = entry.fd, None, None
        try:
            if fd is not None:
                try:
                    os.ftruncate(fd, 0)  # a clean exit leaves no holder behind, so nothing reads as stale
                finally:
                    os.close(fd)  # closing the last fd of the open file drops the flock
        finally:
            entry.gate.release()

    def __enter__(self) -> WorkspaceLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # internals --------------------------------------------------------------------------------
    def _flock(self, deadline: float | None, announced: bool) -> int:
        """Open the lock file and take the flock (polling until `deadline`), then record ourselves in it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            from data_catalog.workspace import unusable  # workspace does not import this module: no cycle

            raise unusable(self.root, exc, "lock") from exc
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                holder = LockHolder.parse(_read_fd(fd))
                if deadline is not None and time.monotonic() >= deadline:
                    raise WorkspaceBusy(self.root, holder, self.wait, _dead_note(holder))
                if not announced:
                    announced = self._announce_wait(holder, _dead_note(holder))
                pause = POLL_INTERVAL if deadline is None else min(POLL_INTERVAL, deadline - time.monotonic())
                time.sleep(max(pause, 0.0))
            previous = LockHolder.parse(_read_fd(fd))
            if previous is not None and previous.pid != os.getpid() and not previous.is_alive():
                logger.info("took over a stale lock left by PID %d (%s) on workspace %s",
                            previous.pid, previous.command, self.root)
            record = LockHolder.current(self.command).to_json().encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            os.fsync(fd)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _announce_wait(self, holder: LockHolder | None, note: str) -> bool:
        who = holder.describe() if holder is not None else "another process"
        limit = "as long as it takes" if self.wait is None else f"up to {self.wait:g} s"
        logger.warning("waiting for workspace %s, in use by %s%s (%s)", self.root, who, note, limit)
        return True


def _read_fd(fd: int) -> str:
    """The lock file's record, read through our fd (no second open, so no second open-file to confuse flock)."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _dead_note(holder: LockHolder | None) -> str:
    """The flock is held but the recorded PID is gone: a child that inherited the fd, or another PID namespace."""
    if holder is not None and not holder.is_alive():
        return (f" (PID {holder.pid} is no longer running here, but a process it started, or one in another PID "
                "namespace, still holds the lock)")
    return ""


@contextmanager
def workspace_lock(root: str | Path, *, command: str | None = None, wait: Wait = FROM_ENV) -> Iterator[WorkspaceLock]:
    """Hold `root`'s workspace lock for the `with` block; raises `WorkspaceBusy` if it cannot be had in `wait`."""
    lock = WorkspaceLock(root, command=command, wait=wait)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
