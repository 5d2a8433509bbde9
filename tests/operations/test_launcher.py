"""Children of `qs-promoter up` end with it, even when it is killed without a chance to stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import sys, time
from pathlib import Path
from promoter.child_processes import start_child
child = start_child(
    "sleeper",
    [sys.executable, "-c", "import time; time.sleep(120)"],
    env={"PATH": "/usr/bin:/bin"},
    cwd=Path(sys.argv[1]),
    log_file=Path(sys.argv[1]) / "child.log",
)
print(child.process.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by init, counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_child_ends_when_up_is_killed_with_sigkill(tmp_path: Path) -> None:
    """The parent starts a child as `up` does, then gets SIGKILL (no finally, no handler runs): the
    kernel's parent-death signal ends the child; before that, the child ran as its own command."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while "time.sleep(120)" not in Path(f"/proc/{child_pid}/cmdline").read_text():
            assert time.monotonic() < deadline, "the child never became its command"
            time.sleep(0.05)
        running_before = alive(child_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        running_after = alive(child_pid)
    finally:
        parent.kill()
        parent.wait(timeout=30)
        if parent.stdout is not None:
            parent.stdout.close()

    assert (running_before, running_after) == (True, False)
