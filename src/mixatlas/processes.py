"""Child processes that belong to the run: they die with their parent and are found again after a kill.

- `die_with_parent()`: Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` (through ctypes), called first thing in every
  worker and trainer, so even a SIGKILLed run leaves no worker behind.
- A trainer runs in its own process group (so a timeout kills its children too); `record_group` writes its
  pid, group and start time to a small JSON file in the trial folder and `end_recorded_group` kills that
  group when the file names a group that still runs (a resumed trial first ends the previous trainer). The
  start time guards against a reused pid.
- `preload_in_workers(modules)`: what this process's one fork server imports when it starts, so that each
  fresh worker it forks has them already.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

GROUP_RECORD = "process-group.json"  # in a trial folder: the process group of the trial's trainer
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The C library's prctl, resolved once here (CDLL(None): this program's own symbols, no `ldconfig` run)
# so that `die_with_parent` is safe in a `preexec_fn` between fork and exec.
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
_WORKER_IMPORTS: set[str] = set()  # every module asked for so far (the fork server takes one list)


def preload_in_workers(modules: Iterable[str]) -> None:
    """Add `modules` to what this process's fork server imports when it starts. The server is one per
    process and starts with the first forkserver worker of any kind (atlas workers, trials); asking after
    that has no effect, so a program that knows its later workers' imports asks before its first worker."""
    _WORKER_IMPORTS.update(modules)
    multiprocessing.set_forkserver_preload(sorted(_WORKER_IMPORTS))


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux; a no-op elsewhere).

    If the parent is already gone (the race before the call), exit at once.
    """
    parent = os.getppid()
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def owned_worker() -> None:
    """Initializer of every worker process of a run: die with the parent, leave Ctrl-C to the parent
    (the terminal sends SIGINT to the whole foreground group; the run then ends its workers itself)."""
    die_with_parent()
    _release_forkserver()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _release_forkserver() -> None:
    """Close this worker's copy of the fork server's "alive" pipe.

    CPython hands every forkserver child the write end of that pipe (so the child could start processes of
    its own). The server exits when the pipe's last writer closes it, but while a worker holds it the
    server outlives a SIGKILLed run, and the worker, whose parent is the server, outlives it too. Closed
    here, the run is the only writer: when it dies the server sees EOF and exits, and its workers (and
    their trainers) die with their parents. Our workers start no forkserver processes themselves. (In a
    forked child the fd is a copy of the parent's: closing it leaves the parent's server running.)"""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is None:  # not started by a fork server (nor forked from a process that runs one)
        return
    with contextlib.suppress(OSError):
        os.close(fd)
    server._forkserver_alive_fd = None


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to process group `pgid`; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def record_group(path: Path, pid: int) -> None:
    """Write `{"host", "pid", "pgid", "started"}` of process `pid` (a group leader) to `path`, atomically."""
    path = Path(path)
    try:
        info = {"host": socket.gethostname(), "pid": pid, "pgid": os.getpgid(pid),
                "started": psutil.Process(pid).create_time()}
    except (ProcessLookupError, psutil.NoSuchProcess):  # already gone: nothing to end later
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def end_recorded_group(path: Path, grace_s: float = 2.0) -> bool:
    """Kill the process group recorded in `path` if its leader still runs (same pid and start time), or
    any member of that group is left; remove the record. Returns True when something was killed.

    A record written on another machine is left alone (that machine's run owns the group)."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
        pid, pgid, started = int(info["pid"]), int(info["pgid"]), float(info["started"])
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return False
    if info.get("host") != socket.gethostname():
        return False
    members = [p for p in _group_members(pgid) if p.pid != os.getpid()]
    leader_alive = any(p.pid == pid and abs(_create_time(p) - started) < 1e-3 for p in members)
    # leader gone: the members left are its children unless the pid now leads someone else's group
    ours = leader_alive or (bool(members) and not any(p.pid == pgid for p in members))
    killed = False
    if ours:
        kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_group(pgid, signal.SIGKILL)
        killed = True
    path.unlink(missing_ok=True)
    return killed


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def _create_time(proc: psutil.Process) -> float:
    try:
        return proc.create_time()
    except psutil.Error:
        return float("nan")
