"""The search loop: the one place that joins a study (storage), its optimizer, an objective and an executor.

It keeps `parallel` trials in flight, asks the optimizer for new params (with running trials visible as
pending), records every transition in the study, retries failures with the same params, and resumes a
killed search: done trials are kept, trials left running are run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.console import progress_bar
from mixatlas.errors import MixAtlasError
from mixatlas.executors import Executor, Handle, make_executor
from mixatlas.objectives.base import Objective, Result, TrialContext, TrialFolder
from mixatlas.processes import GROUP_RECORD, end_recorded_group
from mixatlas.search.base import History
from mixatlas.search.config import SearchConfig
from mixatlas.search.multifidelity import FidelityHistory
from mixatlas.search.study import Study, Trial, TrialState
from mixatlas.space import Mixture
from mixatlas.tracking import TrackedRun, Tracker, make_tracker, mixture_params

# Extra time the loop grants a trial past `timeout_s` before killing its worker (the in-worker alarm
# should have stopped it already; this catches code stuck outside Python, e.g. in a C call).
_HARD_TIMEOUT_GRACE_S = 10.0
_POLL_S = 0.5


class TrialTimeout(BaseException):
    """Raised inside a worker when a trial overruns `timeout_s`.

    A BaseException (like KeyboardInterrupt) so an objective's own `except Exception` cannot swallow it.
    """


def default_runs_dir(study_path: Path) -> Path:
    """`runs/s.db` -> `runs/s-runs`: trial folders live beside the study file."""
    study_path = Path(study_path)
    return study_path.with_name(f"{study_path.stem}-runs")


def trial_dir_for(runs_dir: Path, trial_id: int) -> Path:
    return Path(runs_dir) / f"trial-{trial_id:05d}"


@dataclass
class TrialOutcome:
    """What one attempt sends back from its worker (plain data: it crosses process/machine boundaries).

    `result` when the objective returned one, else `error` (a one-line reason); `worker` is "host:pid".
    """

    result: Result | None = None
    error: str | None = None
    worker: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


def run_trial(
    objective: Objective,
    mixture_dict: dict,
    trial_id: int,
    trial_dir: str,
    seed: int,
    timeout_s: float | None,
    fidelity: str | None = None,
) -> TrialOutcome:
    """Evaluate one mixture (at `fidelity` in a multi-fidelity search) where the executor put us; plain
    data in, plain data out.

    The loop owns the trial folder (`TrialFolder`): `mixture.json` before the objective runs, `metrics.json`
    after it returned, `stdout.log` / `stderr.log` around it.
    """
    folder = TrialFolder(Path(trial_dir))
    mixture = Mixture.from_dict(mixture_dict)
    folder.start(mixture)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = time.monotonic()
    try:
        with _output_to(folder.path), _time_limit(timeout_s):
            result = objective.evaluate(mixture, TrialContext(trial_id, folder.path, seed, fidelity))
        if not isinstance(result, Result):
            raise TypeError(f"objective returned {type(result).__name__}, expected Result")
    except TrialTimeout:
        return TrialOutcome(error=f"timed out after {timeout_s:g} s", worker=worker)
    except Exception as exc:
        with open(folder.path / "stderr.log", "a") as err:
            err.write(traceback.format_exc())
        return TrialOutcome(error=_one_line(exc), worker=worker)
    if result.cost_s is None:
        result.cost_s = time.monotonic() - started
    folder.finish(result)
    return TrialOutcome(result=result, worker=worker)


@contextlib.contextmanager
def open_executor(config: SearchConfig, runs_dir: Path) -> Iterator[Executor]:
    """The executor `config` names (kind, parallelism, Ray / Slurm resources), shut down on exit."""
    with make_executor(
        config.executor,
        parallel=config.parallel,
        folder=runs_dir,
        ray_address=config.ray_address,
        gpus_per_trial=config.gpus_per_trial,
        cpus_per_trial=config.cpus_per_trial,
        slurm_partition=config.slurm_partition,
        slurm_cluster=config.slurm_cluster,
        timeout_min=config.slurm_job_minutes,
    ) as executor:
        yield executor


def run_search(
    study: Study,
    objective: Objective,
    executor: Executor,
    *,
    parallel: int = 1,
    retries: int = 1,
    timeout_s: float | None = None,
    runs_dir: Path | None = None,
    progress: bool = True,
    tracker: Tracker | None = None,
) -> Study:
    """Run (or resume) `study` until it has exactly `study.budget` done trials; a multi-fidelity study
    (`study.fidelities`) until no further (mixture, fidelity) proposal fits its `budget_cost` (the done
    trials' costs never exceed it: a trial is proposed only when its cost fits beside the done and
    running ones).

    With a `tracker`, every attempt that finishes here (done or failed) is logged as one run.

    A trial that raises, times out, returns a NaN/missing target metric, or loses its worker is marked
    `failed` with the reason and retried (same params) up to `retries` times; then the search moves on
    with a new proposal. Raises MixAtlasError if failures in this run exceed budget * (retries + 1).
    """
    from mixatlas.search.methods import make_mf_optimizer, make_optimizer

    runs = Path(runs_dir) if runs_dir is not None else default_runs_dir(study.path)
    runs.mkdir(parents=True, exist_ok=True)
    fidelities = study.fidelities
    if fidelities is None:
        optimizer = make_optimizer(study.method, **study.method_options)
        max_failures = study.budget * (retries + 1)
    else:
        optimizer = make_mf_optimizer(study.method, **study.method_options)
        max_trials = math.floor(study.budget_cost / min(fidelities.costs) + 1e-9)
        max_failures = max(study.budget, max_trials) * (retries + 1)
    exhausted = False  # multi-fidelity: the last ask found nothing that fits; ask again after a change
    inflight: dict[Handle, tuple[Trial, float]] = {}
    failures = 0
    requeue_on_exit = _inflight_requeued(study, executor, inflight)
    with study.exclusive(), _progress_bar(study, progress) as show, requeue_on_exit:
        study.requeue_interrupted()
        while True:
            n_done = study.count(TrialState.DONE)
            show(n_done)
            if fidelities is None:
                if n_done >= study.budget and not inflight:
                    return study
                starting = _next_trials(study, optimizer, n_done, inflight, parallel)
            else:
                starting = [] if exhausted else _next_mf_trials(study, optimizer, inflight, parallel)
                exhausted = len(inflight) + len(starting) < parallel
                if not starting and not inflight:
                    return study
            for trial in starting:
                trial = study.start_trial(
                    trial.id, trial_dir=trial_dir_for(runs, trial.id), worker=executor.kind
                )
                end_recorded_group(Path(trial.trial_dir) / GROUP_RECORD)  # a trainer left by a killed run
                seed = trial_seed(study, trial)
                handle = executor.submit(
                    run_trial, objective, trial.mixture.to_dict(), trial.id, trial.trial_dir, seed, timeout_s,
                    trial.fidelity,
                )
                inflight[handle] = (trial, time.monotonic())
            for handle in executor.wait(list(inflight), timeout=_POLL_S):
                trial, _ = inflight.pop(handle)
                failures += _record_outcome(study, trial, _collect(executor, handle), retries)
                _track(tracker, study, trial.id)
                exhausted = False
            for handle in _overrun(executor, inflight, timeout_s):
                trial, _ = inflight.pop(handle)
                executor.cancel(handle)
                end_recorded_group(Path(trial.trial_dir) / GROUP_RECORD)
                outcome = TrialOutcome(error=f"timed out after {timeout_s:g} s; worker killed")
                failures += _record_outcome(study, trial, outcome, retries)
                _track(tracker, study, trial.id)
                exhausted = False
            if failures > max_failures:
                last = study.trials(TrialState.FAILED)[-1]
                raise MixAtlasError(
                    f"{study.path}: {failures} trial attempts failed in this run (last, trial {last.id}: "
                    f"{last.error}); fix the objective and rerun the same command to resume"
                )


@contextlib.contextmanager
def _inflight_requeued(
    study: Study, executor: Executor, inflight: dict[Handle, tuple[Trial, float]]
) -> Iterator[None]:
    """However the loop ends (Ctrl-C, SIGTERM, an error), end its in-flight trials (workers and recorded
    trainer groups) and put them back to pending, uncounted as failures, for the next run to resume.

    Every `running` row is ours (we hold the study lock), also one started just before the signal and
    not yet in `inflight`."""
    try:
        yield
    finally:
        for handle in list(inflight):
            executor.cancel(handle)
        inflight.clear()
        for trial in study.trials(TrialState.RUNNING):
            if trial.trial_dir:
                end_recorded_group(Path(trial.trial_dir) / GROUP_RECORD)
        study.requeue_interrupted()


@dataclass(frozen=True)
class MixtureJob:
    """One evaluation outside any study's budget (e.g. a recommendation re-trained at a fresh seed).

    `key` is the caller's name for it; the job runs as trial `trial_id` in `trial_dir` with `seed`, at
    `fidelity` (a multi-fidelity study's name, e.g. its target; None for single-fidelity objectives).
    """

    key: Any
    mixture: Mixture
    trial_dir: Path
    seed: int
    trial_id: int = 0
    fidelity: str | None = None


def evaluate_mixtures(
    objective: Objective, executor: Executor, jobs: list[MixtureJob], timeout_s: float | None = None
) -> Iterator[tuple[MixtureJob, TrialOutcome]]:
    """Run every job through `run_trial` on `executor` (all submitted at once, the executor's parallelism
    applies); yields (job, outcome) as each finishes."""
    pending = {
        executor.submit(
            run_trial, objective, job.mixture.to_dict(), job.trial_id, str(job.trial_dir), job.seed,
            timeout_s, job.fidelity,
        ): job
        for job in jobs
    }
    while pending:
        for handle in executor.wait(list(pending), timeout=_POLL_S):
            job = pending.pop(handle)
            yield job, _collect(executor, handle)


def trial_seed(study: Study, trial: Trial) -> int:
    """The training seed of `trial`: the study seed for every trial when the study shares seeds (common
    random numbers), else seed + the id of the trial's first attempt (a retry reruns the same seed).
    A replicate (params equal to an earlier trial's, proposed by the optimizer to measure noise) gets a
    new seed in both modes: shared seeds add the replicate's index among the trials with its params."""
    root = trial.retry_of if trial.retry_of is not None else trial.id
    if study.meta.get("trial_seeds") == "shared":
        earlier = [
            t for t in study.trials()
            if t.id < root and t.retry_of is None and np.array_equal(t.params, trial.params)
        ]
        return study.seed + len(earlier)
    return study.seed + root


def _next_trials(
    study: Study, optimizer: Any, n_done: int, inflight: dict[Handle, tuple[Trial, float]], parallel: int
) -> list[Trial]:
    """Pending trials to start now (resumed or retries first, then new proposals), at most what fits."""
    n_start = min(parallel - len(inflight), study.budget - n_done - len(inflight))
    if n_start <= 0:
        return []
    running_ids = {trial.id for trial, _ in inflight.values()}
    queued = [t for t in study.trials(TrialState.PENDING) if t.id not in running_ids][:n_start]
    if len(queued) < n_start:
        for params in optimizer.ask(_history_for_proposals(study), n_start - len(queued)):
            queued.append(study.add_trial(params))
    return queued


def _next_mf_trials(
    study: Study, optimizer: Any, inflight: dict[Handle, tuple[Trial, float]], parallel: int
) -> list[Trial]:
    """Multi-fidelity: pending trials to start now (resumed or retries first; their cost is already
    committed), then new (mixture, fidelity) proposals, each only if its cost fits the budget left."""
    n_start = parallel - len(inflight)
    if n_start <= 0:
        return []
    running_ids = {trial.id for trial, _ in inflight.values()}
    queued = [t for t in study.trials(TrialState.PENDING) if t.id not in running_ids][:n_start]
    if len(queued) < n_start:
        history = _mf_history_for_proposals(study)
        if history.remaining + 1e-9 >= min(history.fidelities.costs):
            names = history.fidelities.names
            for params, fidelity in optimizer.ask(history, n_start - len(queued)):
                queued.append(study.add_trial(params, fidelity=names[fidelity]))
    return queued


def _mf_history_for_proposals(study: Study) -> FidelityHistory:
    """The study's fidelity history with abandoned trials (failed after all retries) shown as pending,
    as in `_history_for_proposals`; their cost is added to the budget, since a failure spends nothing."""
    history = study.fidelity_history()
    abandoned = [t for t in _latest_attempts(study) if t.state == TrialState.FAILED]
    if not abandoned:
        return history
    fidelities = history.fidelities
    h = history.history
    pending = np.vstack([h.pending_params, np.asarray([t.params for t in abandoned])])
    pending_fidelity = np.concatenate(
        [history.pending_fidelity, [fidelities.index(t.fidelity) for t in abandoned]]
    ).astype(int)
    return dataclasses.replace(
        history,
        history=dataclasses.replace(h, pending_params=pending),
        pending_fidelity=pending_fidelity,
        budget_cost=history.budget_cost + sum(fidelities.cost(t.fidelity) for t in abandoned),
    )


def _latest_attempts(study: Study) -> list[Trial]:
    """The last row of each retry chain (id order)."""
    latest: dict[int, Trial] = {}
    for trial in study.trials():  # id order: the last row of each retry chain wins
        latest[trial.retry_of if trial.retry_of is not None else trial.id] = trial
    return list(latest.values())


def _history_for_proposals(study: Study) -> History:
    """The study's history with abandoned params (failed after all retries) shown as pending.

    Without them an optimizer would see exactly the history that produced the failing proposal and,
    being a function of it, propose the same params again; as pending points they count as taken.
    """
    history = study.history()
    latest: dict[int, Trial] = {}
    for trial in study.trials():  # id order: the last row of each retry chain wins
        latest[trial.retry_of if trial.retry_of is not None else trial.id] = trial
    abandoned = [t.params for t in latest.values() if t.state == TrialState.FAILED]
    if not abandoned:
        return history
    pending = np.vstack([history.pending_params, np.asarray(abandoned)])
    return dataclasses.replace(history, pending_params=pending)


def _collect(executor: Executor, handle: Handle) -> TrialOutcome:
    try:
        return executor.result(handle)
    except Exception as exc:  # the worker process / node / job died under the trial
        return TrialOutcome(error=f"lost its worker: {_one_line(exc)}")


def _record_outcome(study: Study, trial: Trial, outcome: TrialOutcome, retries: int) -> int:
    """Store one finished attempt; returns 1 if it failed, else 0."""
    worker = outcome.worker
    error = outcome.error
    if outcome.result is not None:
        try:
            study.finish_trial(trial.id, outcome.result, worker=worker)
            return 0
        except MixAtlasError as exc:  # missing or non-finite target metric
            error = str(exc)
    study.fail_trial(trial.id, error or "unknown failure", retry=trial.attempts <= retries, worker=worker)
    return 1


def open_tracker(kind: str | None, uri: str | None, study: Study) -> contextlib.AbstractContextManager:
    """`with open_tracker(...) as tracker`: the tracker a search logs its trials to (experiment = the study
    file's name; closed, i.e. flushed, on exit), or None when `kind` is None."""
    return contextlib.nullcontext() if kind is None else make_tracker(kind, Path(study.path).stem, uri)


def _track(tracker: Tracker | None, study: Study, trial_id: int) -> None:
    """Log one finished attempt: mixture params, metrics + `target`, curve, state/error tags."""
    if tracker is None:
        return
    trial = study.trial(trial_id)
    metrics = dict(trial.metrics or {})
    if trial.value is not None:
        metrics["target"] = trial.value
    tags = {"study": str(study.path), "method": study.method, "target": study.target.spec,
            "state": trial.state}
    if trial.error:
        tags["error"] = trial.error[:500]
    if trial.fidelity is not None:
        tags["fidelity"] = trial.fidelity
    params = {"trial_id": trial.id, "seed": trial_seed(study, trial), **mixture_params(trial.mixture)}
    tracker.log(TrackedRun(f"trial-{trial.id:05d}", params, metrics, trial.curve, tags))


def _overrun(
    executor: Executor, inflight: dict[Handle, tuple[Trial, float]], timeout_s: float | None
) -> list:
    """Handles running past timeout + grace; scheduler-queued executors enforce limits themselves."""
    if timeout_s is None or executor.queues_jobs:
        return []
    limit = timeout_s + max(_HARD_TIMEOUT_GRACE_S, 0.1 * timeout_s)
    now = time.monotonic()
    return [h for h, (_, submitted) in inflight.items() if now - submitted > limit]


@contextlib.contextmanager
def _progress_bar(study: Study, enabled: bool) -> Iterator[Any]:
    """Yields `show(n_done)`: updates a rich bar "trials done/budget, best so far" (no-op when disabled);
    a multi-fidelity study's bar counts cost spent of `budget_cost`, its best is at the target fidelity."""
    fidelities = study.fidelities
    total = study.budget if fidelities is None else study.budget_cost
    with progress_bar(enabled, "search", total=total) as bar:

        def show(n_done: int) -> None:
            if not enabled:
                return
            done = study.trials(TrialState.DONE)
            if fidelities is not None:
                done = [t for t in done if t.fidelity == fidelities.target]
            best = study.target.best(t.value for t in done) if done else None
            label = "search" if best is None else f"search · best {study.target.spec} {best:.5g}"
            completed = n_done if fidelities is None else study.cost_spent()
            bar.update(completed=completed, description=label)

        yield show


@contextlib.contextmanager
def _output_to(folder: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (fd level, so child processes too) to the trial's log files."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(folder / "stdout.log", "ab") as out, open(folder / "stderr.log", "ab") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _time_limit(timeout_s: float | None) -> Iterator[None]:
    """Raise TrialTimeout in this (main) thread after `timeout_s`; elsewhere the loop's kill is the limit."""
    import threading

    if timeout_s is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TrialTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:500]
