"""Where trials run: a local process pool, a Ray cluster, or Slurm (submitit), behind one small interface.

An executor only runs callables: `submit(fn, *args) -> handle`, `wait(handles, timeout) -> done handles`,
`result(handle)` (the return value, or the worker's error raised), `cancel(handle)`, `shutdown()`.
Arguments and results are plain data (the search loop ships a mixture dict in and gets a result dict out).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixatlas.errors import MixAtlasError

EXECUTOR_KINDS = ("local", "ray", "slurm")

# Ray's unix sockets live at TEMP/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store.N and must fit
# in 107 bytes (sun_path); the part after TEMP takes up to 67 characters.
_RAY_TEMP_DIR_MAX_CHARS = 40


@dataclass(eq=False)
class Handle:
    """One submitted call; `ref` is the backend's future / ObjectRef / submitit Job."""

    key: int
    ref: Any
    submitted_at: float = field(default_factory=time.time)


class Executor(ABC):
    """Runs callables somewhere; see the module docstring."""

    kind: str = ""
    # True when a scheduler may hold submitted work in a queue (so wall time since submit is not run time)
    # and enforces its own time limit; the loop then never kills overrunning calls itself.
    queues_jobs: bool = False

    def __init__(self) -> None:
        self._keys = itertools.count()

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Handle:
        """Start `fn(*args)`; args and return value must be picklable plain data."""

    @abstractmethod
    def wait(self, handles: Sequence[Handle], timeout: float | None) -> list[Handle]:
        """Block until at least one handle is finished or `timeout` s pass; return the finished ones."""

    @abstractmethod
    def result(self, handle: Handle) -> Any:
        """The call's return value; raises the worker's error (or a lost-worker error)."""

    @abstractmethod
    def cancel(self, handle: Handle) -> None:
        """Stop a call that overran its time: kill its worker if it is running."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop everything still running and release the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def make_executor(
    kind: str,
    *,
    parallel: int,
    folder: Path,
    ray_address: str | None = None,
    gpus_per_trial: float = 0,
    cpus_per_trial: float = 1,
    slurm_partition: str | None = None,
    slurm_cluster: str = "slurm",
    timeout_min: int = 60,
) -> Executor:
    """Build the executor named `kind` ("local" | "ray" | "slurm") for `parallel` trials in flight.

    `folder` is the run's folder: Ray's temp dir and submitit's job files live under it.
    `slurm_cluster="local"` runs submitit jobs as local processes (tests, laptops).
    """
    if parallel < 1:
        raise MixAtlasError(f"--parallel {parallel}: must be at least 1")
    folder = Path(folder)
    if kind == "local":
        return LocalExecutor(parallel)
    if kind == "ray":
        return RayExecutor(
            parallel,
            folder,
            address=ray_address,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
        )
    if kind == "slurm":
        return SlurmExecutor(
            folder,
            cluster=slurm_cluster,
            partition=slurm_partition,
            gpus_per_node=int(gpus_per_trial),
            cpus_per_task=max(1, int(cpus_per_trial)),
            timeout_min=timeout_min,
        )
    raise MixAtlasError(f"--executor {kind!r}: unknown; choose one of {', '.join(EXECUTOR_KINDS)}")


# -- local ----------------------------------------------------------------------------------------------
_started_queue: Any = None


def _init_local_worker(started: Any) -> None:
    global _started_queue
    _started_queue = started


def _call_reporting_pid(key: int, fn: Callable[..., Any], *args: Any) -> Any:
    # Tell the parent which process runs `key`, so an overrunning trial can be killed on its own.
    _started_queue.put((key, os.getpid()))
    return fn(*args)


class LocalExecutor(Executor):
    """A `ProcessPoolExecutor` (spawn context) of `parallel` worker processes on this machine.

    Workers report which call they run, so `cancel` and `shutdown` kill only workers busy with our calls
    (killing an idle worker could leave the pool's task-queue lock held forever).
    """

    kind = "local"

    def __init__(self, parallel: int) -> None:
        super().__init__()
        self._parallel = parallel
        self._context = multiprocessing.get_context("spawn")
        self._started = self._context.Queue()
        self._pids: dict[int, int] = {}  # key of a call -> pid of the worker that started it
        self._uncollected: dict[int, Handle] = {}
        self._pool = self._new_pool()

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        return futures.ProcessPoolExecutor(
            self._parallel,
            mp_context=self._context,
            initializer=_init_local_worker,
            initargs=(self._started,),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Handle:
        key = next(self._keys)
        try:
            future = self._pool.submit(_call_reporting_pid, key, fn, *args)
        except BrokenProcessPool:  # a worker died (killed, OOM): start a fresh pool for new work
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            future = self._pool.submit(_call_reporting_pid, key, fn, *args)
        handle = Handle(key, future)
        self._uncollected[key] = handle
        return handle

    def wait(self, handles: Sequence[Handle], timeout: float | None) -> list[Handle]:
        by_future = {h.ref: h for h in handles}
        done, _ = futures.wait(list(by_future), timeout=timeout, return_when=futures.FIRST_COMPLETED)
        return [by_future[f] for f in done]

    def result(self, handle: Handle) -> Any:
        self._uncollected.pop(handle.key, None)
        return handle.ref.result()

    def cancel(self, handle: Handle) -> None:
        self._uncollected.pop(handle.key, None)
        if not handle.ref.cancel():
            self._kill_worker_of(handle)

    def shutdown(self) -> None:
        for handle in list(self._uncollected.values()):
            if not handle.ref.cancel():
                self._kill_worker_of(handle)
        self._uncollected.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _kill_worker_of(self, handle: Handle) -> None:
        """SIGKILL the worker running `handle`; the pool then reports its other calls as lost."""
        if handle.ref.done():
            return
        while True:  # collect the "started" reports sent so far
            try:
                key, pid = self._started.get(timeout=0.05)
            except queue.Empty:
                break
            self._pids[key] = pid
        pid = self._pids.pop(handle.key, None)
        if pid is not None:
            with _ignore_missing_process():
                os.kill(pid, signal.SIGKILL)


class _ignore_missing_process:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, *rest: object) -> bool:
        return exc_type is ProcessLookupError


# -- ray ------------------------------------------------------------------------------------------------
class RayExecutor(Executor):
    """Ray tasks with per-trial resources; connects to `address` or starts a private local Ray.

    The local Ray keeps all its files under `<folder>/ray` (temp dir, sessions, logs) and runs without the
    dashboard, usage stats, or auth-token files in the home folder.
    """

    kind = "ray"

    def __init__(
        self,
        parallel: int,
        folder: Path,
        *,
        address: str | None,
        cpus_per_trial: float,
        gpus_per_trial: float,
    ) -> None:
        super().__init__()
        import ray

        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                temp_dir = (Path(folder) / "ray").resolve()
                if len(str(temp_dir)) > _RAY_TEMP_DIR_MAX_CHARS:
                    raise MixAtlasError(
                        f"{temp_dir}: too long for Ray's socket paths ({len(str(temp_dir))} > "
                        f"{_RAY_TEMP_DIR_MAX_CHARS} chars); use a shorter --runs-dir"
                    )
                temp_dir.mkdir(parents=True, exist_ok=True)
                os.environ["RAY_TMPDIR"] = str(temp_dir)
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
                ray.init(
                    num_cpus=max(1, int(parallel * cpus_per_trial)),
                    num_gpus=int(parallel * gpus_per_trial) if gpus_per_trial else None,
                    _temp_dir=str(temp_dir),
                    include_dashboard=False,
                    log_to_driver=False,
                )
            self._started_ray = True
        self.queues_jobs = address is not None
        self._options = {"num_cpus": cpus_per_trial, "num_gpus": gpus_per_trial, "max_retries": 0}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Handle:
        remote_fn = self._ray.remote(fn).options(**self._options)
        return Handle(next(self._keys), remote_fn.remote(*args))

    def wait(self, handles: Sequence[Handle], timeout: float | None) -> list[Handle]:
        by_ref = {h.ref: h for h in handles}
        refs = list(by_ref)
        ready, rest = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return [by_ref[r] for r in ready]

    def result(self, handle: Handle) -> Any:
        return self._ray.get(handle.ref)

    def cancel(self, handle: Handle) -> None:
        self._ray.cancel(handle.ref, force=True)

    def shutdown(self) -> None:
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False


# -- slurm ----------------------------------------------------------------------------------------------
class SlurmExecutor(Executor):
    """submitit jobs, one per trial; `cluster="local"` runs them as local processes (same code path)."""

    kind = "slurm"
    queues_jobs = True

    def __init__(
        self,
        folder: Path,
        *,
        cluster: str,
        partition: str | None,
        gpus_per_node: int,
        cpus_per_task: int,
        timeout_min: int,
        poll_s: float = 0.2,
    ) -> None:
        super().__init__()
        import submitit

        self._executor = submitit.AutoExecutor(folder=str(Path(folder) / "submitit" / "%j"), cluster=cluster)
        parameters: dict[str, Any] = {
            "timeout_min": timeout_min,
            "gpus_per_node": gpus_per_node,
            "cpus_per_task": cpus_per_task,
            "name": "mixatlas-trial",
        }
        if partition:
            parameters["slurm_partition"] = partition
        self._executor.update_parameters(**parameters)
        self._poll_s = poll_s
        self._jobs: dict[int, Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Handle:
        handle = Handle(next(self._keys), self._executor.submit(fn, *args))
        self._jobs[handle.key] = handle.ref
        return handle

    def wait(self, handles: Sequence[Handle], timeout: float | None) -> list[Handle]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.ref.done()]
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done
            time.sleep(self._poll_s)

    def result(self, handle: Handle) -> Any:
        self._jobs.pop(handle.key, None)
        return handle.ref.result()

    def cancel(self, handle: Handle) -> None:
        self._jobs.pop(handle.key, None)
        handle.ref.cancel(check=False)

    def shutdown(self) -> None:
        """Cancel jobs whose result was never collected (a resumed search runs those trials again)."""
        for job in self._jobs.values():
            if not job.done():
                job.cancel(check=False)
        self._jobs.clear()
