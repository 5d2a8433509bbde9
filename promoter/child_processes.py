"""Child processes of `up`, the demo and the sandbox: in their own group, stopped gently, then firmly.

Why each child gets its own group: a Ctrl-C in the terminal then reaches `up` alone, and `up`
stops the children in the order it chooses (the executor first). Why SIGINT must not be ignored
in the parent: a POSIX child inherits an *ignored* SIGINT across exec (a caught one becomes the
default), and a Prefect worker started from a non-interactive shell (`cmd &`) then ignores the
interrupt it needs to stop (prefect-notes §3.3). ``restore_interrupt()`` fixes that for us.

Windows has no SIGINT to send to another process: a child in a new process group gets
CTRL_BREAK_EVENT instead, which uvicorn, the executor and the Prefect worker treat as their stop
signal. No fork anywhere: ``subprocess.Popen`` only.

On Linux each child also dies with us: a killed `up` (kill -9, the OOM killer, a test run
stopped) must not leave a Prefect server, an executor and a webhook running with nobody to stop
them. The kernel's parent-death signal does it; it is set by a small Python step that then
execs the child's command in the same process (``preexec_fn`` is not safe in a process with
threads). The signal comes when the *thread* that started the child ends, so children are
started from a thread that lives as long as the stack (the main thread, a watch thread).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

WINDOWS = sys.platform == "win32"


def restore_interrupt() -> None:
    """Make sure SIGINT is not ignored in this process, so the children we start can be interrupted.

    Call from the main thread before starting children (an installed handler is also fine).
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Child:
    """One running child process and the file its output goes to."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
        self.name = name
        self.process = process
        self.log_file = log_file

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def interrupt(self) -> None:
        """What Ctrl-C would do: SIGINT on POSIX, CTRL_BREAK_EVENT to its group on Windows."""
        if not self.alive():
            return
        try:
            if WINDOWS:
                self.process.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                os.kill(self.process.pid, signal.SIGINT)
        except (ProcessLookupError, OSError):
            pass  # it ended in between

    def terminate(self) -> None:
        """SIGTERM to its whole process group (POSIX); TerminateProcess on Windows."""
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to its whole process group (POSIX); TerminateProcess on Windows."""
        self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))

    def _signal_group(self, signum: int) -> None:
        if WINDOWS:
            if self.alive():
                self.process.kill()
            return
        # The group id is the child's pid (start_new_session): this also reaches anything it
        # started in its own group, e.g. a uvicorn reloader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, grace_seconds: float = 20.0) -> int | None:
        """Interrupt, wait ``grace_seconds``; then terminate and, 5 s later, kill. Returns the exit code."""
        for step, wait in ((self.interrupt, grace_seconds), (self.terminate, 5.0), (self.kill, 5.0)):
            if not self.alive():
                break
            step()
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if not WINDOWS:
            # Whatever the child left in its group (it exited first) goes with it.
            self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))
        return self.returncode

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the child wrote, for an error message."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# Run by the child's own interpreter before it becomes the command: SIGTERM when our starting
# thread ends (PR_SET_PDEATHSIG is 1), and no start at all if we are gone already.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dying_with_parent(command: Sequence[str]) -> list[str]:
    """``command``, made to end with this process on Linux (unchanged elsewhere)."""
    if sys.platform != "linux":
        return list(command)
    return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *command]


def start_child(
    name: str, command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_file: Path
) -> Child:
    """Start ``command`` in a new process group, output (UTF-8) appended to ``log_file``; on Linux it
    ends with this process."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, object] = {}
    if WINDOWS:
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    with log_file.open("ab") as log:
        header = f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {name}: {' '.join(command)}\n"
        log.write(header.encode("utf-8"))
        log.flush()
        process = subprocess.Popen(  # noqa: S603 - our own commands, no shell
            dying_with_parent(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **options,  # type: ignore[call-overload]
        )
    return Child(name, process, log_file)


def run_command(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_file: Path, timeout: float
) -> tuple[int, str]:
    """Run a short command to completion (output appended to ``log_file``); returns (exit code, tail).

    A timeout kills it and returns exit code -1.
    """
    child = start_child(Path(command[0]).name, command, env=env, cwd=cwd, log_file=log_file)
    try:
        code = child.process.wait(timeout)
    except subprocess.TimeoutExpired:
        child.stop(grace_seconds=2)
        code = -1
    return code, child.log_tail()


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    *,
    interval: float = 0.25,
    stop: threading.Event | None = None,
) -> bool:
    """Poll ``condition()`` until it is true (True), ``timeout`` passes or ``stop`` is set (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return False
        if stop is not None:
            stop.wait(interval)
        else:
            time.sleep(interval)


def python_command(*args: str) -> list[str]:
    """``python -m ...`` with this interpreter, so children use the same virtualenv on every OS."""
    return [sys.executable, *args]
