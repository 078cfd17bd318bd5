"""Where trials run: a local worker process per trial, a Ray cluster, or Slurm (submitit), behind one API.

An executor only runs callables: `submit(fn, *args) -> handle`, `wait(handles, timeout) -> done handles`,
`result(handle)` (the return value, or the worker's error raised), `cancel(handle)`, `shutdown()`.
Arguments and results are plain data (the search loop ships a mixture dict in and gets a result dict out).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from typing import Any

from mixatlas.errors import MixAtlasError
from mixatlas.processes import owned_worker, preload_in_workers

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
        return LocalExecutor(parallel, gpus_per_trial)
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
class WorkerLost(RuntimeError):
    """A local worker process ended without sending its call's result back (killed, OOM, crash)."""


def _worker_main(conn: Connection, env: dict[str, str], fn: Callable[..., Any], args: tuple) -> None:
    """A local worker: dies with the run, leaves Ctrl-C to the run, sends back `("ok", value)` or
    `("error", exception)`."""
    owned_worker()
    os.environ.clear()  # the forkserver's environment is the one it started with; use the run's current one
    os.environ.update(env)
    try:
        message: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # every failure goes back to the run
        message = ("error", exc)
    with contextlib.suppress(OSError):  # a broken pipe: the run stopped listening (cancelled us, or ended)
        try:
            conn.send(message)
        except OSError:
            raise
        except Exception as exc:  # an unpicklable value or exception
            conn.send(("error", RuntimeError(f"cannot send the result back: {type(exc).__name__}: {exc}")))
        conn.close()


@dataclass(eq=False)
class _LocalCall:
    """One call: queued until a slot is free, then its worker process and the pipe its result comes on."""

    fn: Callable[..., Any]
    args: tuple
    process: Any = None
    conn: Connection | None = None
    message: tuple[str, Any] | None = None
    gpus: str | None = None  # CUDA_VISIBLE_DEVICES of the running call (a slot of `gpu_slots`)

    @property
    def running(self) -> bool:
        return self.process is not None and self.message is None

    def start(self, context: Any, name: str, gpus: str | None) -> None:
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus = gpus
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_worker_main, args=(send, env, self.fn, self.args), name=name)
        # Ctrl-C / SIGTERM wait until the start is complete: a start cut short would leave a half-fed
        # child (its unpickling error on the terminal) and no pid to kill
        deferred = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            process.start()
            self.process, self.conn = process, receive
        finally:
            send.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, deferred)

    def collect(self) -> None:
        """Read the result if it arrived, or note the worker's death (call when pipe or process is ready)."""
        if not self.running:
            return
        try:
            if self.conn.poll():
                self.message = self.conn.recv()
        except (EOFError, OSError):
            pass
        if self.message is None and not self.process.is_alive():
            self.process.join()
            self.message = ("error", WorkerLost(f"its worker process ended ({_exit_reason(self.process)})"))
        if self.message is not None:
            self.conn.close()
            self.process.join()

    def kill(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.join()
            self.conn.close()
        if self.message is None:
            self.message = ("error", WorkerLost("its worker process was killed (cancelled)"))


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES entries (that variable's own list when it is set)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [device.strip() for device in listed.split(",") if device.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(parallel: int, gpus_per_trial: float, visible: Sequence[str]) -> list[str]:
    """The CUDA_VISIBLE_DEVICES values of `parallel` concurrent local calls: disjoint groups of
    `gpus_per_trial` consecutive entries of `visible` (slot i = entries i*g .. i*g+g-1)."""
    per = int(gpus_per_trial)
    if per != gpus_per_trial or per < 1:
        raise MixAtlasError(
            f"--gpus-per-trial {gpus_per_trial:g}: the local executor pins whole GPUs; pass an integer >= 1 "
            "(or 0 for none)"
        )
    if parallel * per > len(visible):
        raise MixAtlasError(
            f"--parallel {parallel} x --gpus-per-trial {per} needs {parallel * per} GPUs but this machine "
            f"shows {len(visible)} ({','.join(visible) or 'none'}); lower --parallel or --gpus-per-trial"
        )
    return [",".join(visible[i * per : (i + 1) * per]) for i in range(parallel)]


def _exit_reason(process: Any) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class LocalExecutor(Executor):
    """A fresh worker process per call on this machine (forkserver start: milliseconds), `parallel` at once;
    later calls wait in a queue.

    Each worker dies with the run (`PR_SET_PDEATHSIG`), ignores the terminal's Ctrl-C (the run decides when
    its calls stop) and runs only its own call: killing a stuck one (`cancel`) never touches another, and the
    next call starts in a fresh process. With `gpus_per_trial` g >= 1 each call runs pinned to g GPUs no
    other running call has (its CUDA_VISIBLE_DEVICES is a free slot of `gpu_slots`).
    """

    kind = "local"

    def __init__(self, parallel: int, gpus_per_trial: float = 0) -> None:
        super().__init__()
        self._parallel = parallel
        self._gpu_slots = gpu_slots(parallel, gpus_per_trial, visible_gpus()) if gpus_per_trial else []
        self._context = multiprocessing.get_context("forkserver")
        self._calls: dict[int, _LocalCall] = {}  # submitted and not yet collected, in submission order

    def submit(self, fn: Callable[..., Any], *args: Any) -> Handle:
        if not self._calls:  # preload what the calls import once in the fork server, not per call (no
            # effect once the server runs): the function's and its arguments' modules, and the modules an
            # argument names in `worker_imports` (the proxy's torch + transformers: ~4 s of every trial)
            modules = {fn.__module__, *(type(arg).__module__ for arg in args)} - {"builtins"}
            modules |= {name for arg in args for name in getattr(arg, "worker_imports", ())}
            preload_in_workers(modules)
        key = next(self._keys)
        call = _LocalCall(fn, args)
        self._calls[key] = call
        self._start_queued()
        return Handle(key, call)

    def wait(self, handles: Sequence[Handle], timeout: float | None) -> list[Handle]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._start_queued()
            done = [h for h in handles if h.ref.message is not None]
            left = None if deadline is None else deadline - time.monotonic()
            if done or (left is not None and left <= 0):
                return done
            waiting = {}
            for call in self._calls.values():
                if call.running:
                    waiting[call.conn] = call
                    waiting[call.process.sentinel] = call
            if not waiting:
                return done
            ready = wait_ready(list(waiting), left)
            for obj in ready:
                waiting[obj].collect()
            if not ready:
                return [h for h in handles if h.ref.message is not None]

    def result(self, handle: Handle) -> Any:
        while handle.ref.message is None:
            self.wait([handle], None)
        self._calls.pop(handle.key, None)
        status, value = handle.ref.message
        if status == "error":
            raise value
        return value

    def cancel(self, handle: Handle) -> None:
        handle.ref.kill()
        self._calls.pop(handle.key, None)

    def shutdown(self) -> None:
        for call in self._calls.values():
            call.kill()
        self._calls.clear()

    def _start_queued(self) -> None:
        running = [call for call in self._calls.values() if call.running]
        for key, call in self._calls.items():
            if len(running) >= self._parallel:
                return
            if call.process is None and call.message is None:
                used = {other.gpus for other in running}
                gpus = next((slot for slot in self._gpu_slots if slot not in used), None)
                call.start(self._context, f"mixatlas-call-{key}", gpus)
                running.append(call)


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
