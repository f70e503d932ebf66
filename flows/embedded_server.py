"""Make Prefect's embedded (ephemeral) API server die with the process that started it, however it dies.

With no PREFECT_API_URL, Prefect 3 starts `python -m uvicorn ... prefect.server.api.server:create_app` as a
child process (`SubprocessASGIServer`, first use of `get_client()`) and stops it from an `atexit` hook. A
process killed with SIGKILL (or the OOM killer, or a segfault) runs no atexit hook, so the server, about
220 MB, lived on under PID 1 and kept listening. Prefect has no hook for the server's command, so
`install()` wraps `SubprocessASGIServer._run_uvicorn_command`: the same command, arguments and
environment, except that `-m uvicorn` becomes `-m flows.embedded_server`, which arms two guards and
then runs uvicorn's own `main()` in the same process:

1. a watchdog thread that polls `os.getppid()` every 0.5 s. When the parent dies, the kernel reparents
   the server (to init or a subreaper), so its parent PID changes whichever thread started it and
   however the parent died. The server then sends itself SIGTERM (uvicorn's graceful shutdown) and
   exits hard with `os._exit` if that has not finished within 3 s. On platforms without reparenting
   (Windows) it polls whether the parent PID still exists (psutil, when installed).
2. on Linux, also `prctl(PR_SET_PDEATHSIG, SIGTERM)`, which signals at once, but only when the server
   was started from the main thread: PDEATHSIG fires when the *thread* that forked the child exits, and
   Prefect may start the server from a helper thread (its events worker, for one) that ends long before
   the process does. The watchdog covers that case.

A normal exit still goes through Prefect's own atexit `stop()`. Nothing changes for an explicit
PREFECT_API_URL (`sdgan serve`, a real server): no embedded server is started, and `install()` does not
even import Prefect's server module then.

Call `flows.embedded_server.install()` once, before the first flow runs.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

PARENT_ENV = "SDGAN_EMBEDDED_SERVER_PARENT_PID"  # set by install()'s wrapper for the server process only
PDEATHSIG_ENV = "SDGAN_EMBEDDED_SERVER_PDEATHSIG"  # "1": the server was started from the main thread
POLL_INTERVAL = 0.5  # seconds between two looks at the parent
GRACE = 3.0  # seconds uvicorn gets to shut down gracefully before os._exit
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_MARK = "_sdgan_dies_with_parent"
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where `flows` is importable from
SERVER_MODULE = "flows.embedded_server"  # what the server process runs instead of `uvicorn`

logger = logging.getLogger("sdgan.embedded_server")
_swap_lock = threading.Lock()


# parent side --------------------------------------------------------------------------------------
def install(*, force: bool = False) -> bool:
    """Make every embedded Prefect server this process starts die with it. Idempotent.

    Returns whether the guard is installed: False, without importing Prefect's server module (a few
    seconds), when an API URL is configured and so no embedded server will start; `force=True`
    installs it anyway.
    """
    if not force and _api_url_configured():
        return False
    from prefect.server.api import server as server_module

    cls = server_module.SubprocessASGIServer
    original = cls._run_uvicorn_command
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    def _run_uvicorn_command(self: Any) -> Any:
        # Prefect builds the command and environment; we only swap what Popen receives (see _GuardedSubprocess).
        with _guarded_popen(server_module):
            return original(self)

    setattr(_run_uvicorn_command, _MARK, True)
    cls._run_uvicorn_command = _run_uvicorn_command
    return True


def uninstall() -> None:
    """Undo `install()` (for tests); servers already started keep their guard."""
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    cls = server_module.SubprocessASGIServer
    if getattr(cls._run_uvicorn_command, _MARK, False):
        cls._run_uvicorn_command = cls._run_uvicorn_command.__wrapped__


def installed() -> bool:
    server_module = sys.modules.get("prefect.server.api.server")
    return server_module is not None and bool(getattr(server_module.SubprocessASGIServer._run_uvicorn_command,
                                                      _MARK, False))


def _api_url_configured() -> bool:
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


@contextmanager
def _guarded_popen(server_module: ModuleType) -> Iterator[None]:
    """While Prefect's method runs, its module's `subprocess` name points at a proxy with our Popen.

    Only the name inside `prefect.server.api.server` changes, and only for the call; everything but
    Popen (TimeoutExpired, used by a concurrent stop()) is the real module's.
    """
    with _swap_lock:
        real = server_module.subprocess
        server_module.subprocess = _GuardedSubprocess(real)
        try:
            yield
        finally:
            server_module.subprocess = real


class _GuardedSubprocess:
    """Stands in for the `subprocess` module; rewrites the embedded server's command, nothing else."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, args: Sequence[str], **kwargs: Any) -> Any:  # noqa: N802 (mirrors subprocess.Popen)
        command, env = guard_command(list(args), kwargs.get("env"))
        return self._real.Popen(command, **{**kwargs, "env": env})


def guard_command(args: list[str], env: dict[str, str] | None) -> tuple[list[str], dict[str, str] | None]:
    """`python -m uvicorn ARGS` -> `python -m flows.embedded_server ARGS`, with this process named as parent.

    Any other command passes unchanged (with a warning): if a Prefect upgrade changes how the server is
    launched, the server still starts, only without the guard.
    """
    if args[1:3] != ["-m", "uvicorn"]:
        logger.warning("Prefect's embedded server command changed (%s); it will not stop when this process is "
                       "killed", " ".join(args[:4]))
        return args, env
    env = dict(os.environ if env is None else env)
    env[PARENT_ENV] = str(os.getpid())
    if threading.current_thread() is threading.main_thread():
        env[PDEATHSIG_ENV] = "1"
    else:
        env.pop(PDEATHSIG_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return [args[0], "-m", SERVER_MODULE, *args[3:]], env


# worker processes ---------------------------------------------------------------------------------
def guard_worker() -> None:
    """`ProcessPoolTaskRunner(initializer=guard_worker)`: the pool worker dies with the process that spawned it.

    Pool workers block on a queue whose write end they hold themselves, so a killed parent leaves them
    running, under PID 1, forever. A worker also starts its own embedded server when no API URL is set
    (Prefect hands it the parent's settings, where the URL is unset): `install()` guards that one too.
    """
    start_watchdog(os.getppid(), what="this task worker")
    install()


def dask_setup(worker: Any) -> None:
    """Dask preload hook (`cluster_kwargs={"preload": ["flows.embedded_server"]}`): guard the embedded
    server a Dask worker starts; distributed already stops its workers when their parent dies."""
    install()


# server side --------------------------------------------------------------------------------------
def parent_gone(parent_pid: int) -> bool:
    """Whether the process that started us has died (POSIX: we were reparented)."""
    if os.name == "posix":
        return os.getppid() != parent_pid
    try:
        import psutil
    except ImportError:
        return False  # no way to tell without it; the server then lives as it did before
    return not psutil.pid_exists(parent_pid)


def set_pdeathsig(sig: int = signal.SIGTERM) -> bool:
    """Linux: ask the kernel to send `sig` when the thread that forked us exits. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def start_watchdog(parent_pid: int, *, pdeathsig: bool = False, interval: float = POLL_INTERVAL,
                   grace: float = GRACE, what: str = "the embedded Prefect server") -> threading.Thread:
    """Stop this process soon after `parent_pid` dies: SIGTERM to ourselves, `os._exit` after `grace` s."""
    if pdeathsig:
        set_pdeathsig(signal.SIGTERM)  # armed after the fork: the watchdog's first look catches an earlier death
    thread = threading.Thread(target=_watch, args=(parent_pid, interval, grace, what), name="sdgan-parent-watchdog",
                              daemon=True)
    thread.start()
    return thread


def _watch(parent_pid: int, interval: float, grace: float, what: str) -> None:
    while not parent_gone(parent_pid):
        time.sleep(interval)
    print(f"sdgan: parent process {parent_pid} is gone; stopping {what} (PID {os.getpid()})", file=sys.stderr,
          flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: graceful shutdown, lifespan hooks
    time.sleep(grace)
    os._exit(1)  # shutdown hung (a stuck connection or service): the parent is gone, nobody waits for us


def main(argv: Sequence[str] | None = None) -> None:
    """The server process: arm the guards, then run uvicorn exactly as `python -m uvicorn ARGS` would."""
    parent = os.environ.pop(PARENT_ENV, "")
    pdeathsig = os.environ.pop(PDEATHSIG_ENV, "") == "1"
    if parent:
        start_watchdog(int(parent), pdeathsig=pdeathsig)
    from uvicorn.main import main as uvicorn_main

    uvicorn_main(args=list(sys.argv[1:] if argv is None else argv), prog_name="uvicorn")


if __name__ == "__main__":
    main()
