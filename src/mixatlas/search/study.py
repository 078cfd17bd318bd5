"""The study: one search's definition and its trials, stored in SQLite so a killed search resumes.

The database (`study.db`, WAL mode) holds the space, objective spec, target, method, budget and seed, and one
row per trial attempt. Every state change (pending -> running -> done | failed) is one `BEGIN IMMEDIATE`
transaction, so a crash at any point leaves a consistent file: done trials are never lost or duplicated.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, Target
from mixatlas.publish import pid_lock
from mixatlas.search.base import History
from mixatlas.search.multifidelity import Fidelities, FidelityHistory
from mixatlas.space import Mixture, MixtureSpace

# 2: trials.interruptions (crash / stop requeues, counted apart from attempts); 3: trials.fidelity (the
# fidelity a multi-fidelity study ran the trial at; NULL in single-fidelity studies)
SCHEMA_VERSION = 3
_ADDED_COLUMNS = (("interruptions", "INTEGER NOT NULL DEFAULT 0"), ("fidelity", "TEXT"))  # by versions 2, 3


class TrialState(StrEnum):
    """A trial row's state; stored as its text. pending -> running -> done | failed."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    def is_finished(self) -> bool:
        """Done or failed: the attempt is over (a failed one may have a pending retry row)."""
        return self in (TrialState.DONE, TrialState.FAILED)


_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    params TEXT NOT NULL,
    mixture TEXT NOT NULL,
    metrics TEXT,
    curve TEXT,
    cost_s REAL,
    value REAL,
    error TEXT,
    attempts INTEGER NOT NULL,
    interruptions INTEGER NOT NULL DEFAULT 0,
    retry_of INTEGER REFERENCES trials(id),
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker TEXT,
    trial_dir TEXT,
    fidelity TEXT
);
CREATE INDEX trials_state ON trials(state);
"""


@dataclass(frozen=True)
class Trial:
    """One attempt at evaluating one parameter vector.

    `params` is (d,) in the study's space; `mixture` its k x T cell matrix. `attempts` is the attempt
    number in the retry chain (1 = first try; a retry after a real failure is a new row whose `retry_of` is
    the first row of the chain, so the failure stays recorded); `interruptions` counts how often this row
    was requeued because the search was killed or stopped under it, which never uses up a retry.
    """

    id: int
    state: TrialState
    params: np.ndarray
    mixture: Mixture
    metrics: dict[str, float] | None
    curve: list[list[float]]
    cost_s: float | None
    value: float | None
    error: str | None
    attempts: int
    interruptions: int
    retry_of: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    trial_dir: str | None
    fidelity: str | None = None  # multi-fidelity studies: the fidelity name it ran at


class Study:
    """A search stored in one SQLite file; see the module docstring. Build with `create` or `open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self._path = Path(path)
        self._conn = conn
        self._settings = {
            key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM study")
        }
        self._space = MixtureSpace.from_dict(self._settings["space"])
        self._target = Target.parse(self._settings["target"], minimize=self._settings["minimize"])

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        *,
        space: MixtureSpace,
        objective_spec: dict,
        target: Target,
        method: str,
        budget: int,
        seed: int,
        method_options: dict | None = None,
        meta: dict | None = None,
        fidelities: Fidelities | None = None,
        budget_cost: float | None = None,
    ) -> Study:
        """Write a new study file at `path` (which must not exist yet) and open it.

        The file is built under a temporary name and linked into place in one step, so a kill never leaves
        a half-made study, and of two simultaneous creations exactly one wins (the other gets a
        MixAtlasError saying so). A multi-fidelity study also stores its `fidelities` (names, costs,
        target) and `budget_cost`; single-fidelity settings keep exactly their old keys.
        """
        path = Path(path)
        if path.exists():
            raise MixAtlasError(
                f"{path}: a study already exists here; open it to resume or pick another path"
            )
        if budget < 1:
            raise MixAtlasError(f"budget {budget}: must be at least 1 objective evaluation")
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "space": space.to_dict(),
            "objective_spec": objective_spec,
            "target": target.spec,
            "minimize": target.minimize,
            "method": method,
            "method_options": method_options or {},
            "budget": int(budget),
            "seed": int(seed),
            "meta": meta or {},
            "created_at": time.time(),
        }
        if fidelities is not None:
            if budget_cost is None or not budget_cost > 0:
                raise MixAtlasError(f"budget_cost {budget_cost}: a multi-fidelity study needs a positive one")
            settings |= {"fidelities": fidelities.to_dict(), "budget_cost": float(budget_cost)}
        for stale in path.parent.glob(f".{path.name}.creating-*"):  # left by a creation that was killed
            pid = re.search(r"\.creating-(\d+)", stale.name)
            if pid and not psutil.pid_exists(int(pid.group(1))):
                stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
        try:
            conn = _connect(tmp)
            with _transaction(conn):
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                conn.executemany(
                    "INSERT INTO study VALUES (?, ?)", [(k, json.dumps(v)) for k, v in settings.items()]
                )
            conn.close()  # checkpoints the WAL into the file and removes -wal/-shm
            os.link(tmp, path)  # fails if the path exists: never replaces a study
        except FileExistsError:
            raise MixAtlasError(
                f"{path}: another search created this study at the same moment; rerun the same command to "
                "resume it"
            ) from None
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)
        return cls(path, _connect(path))

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Study:
        """Open an existing study; a missing, foreign or corrupt file raises MixAtlasError.

        `read_only` never writes the file (not even a journal-mode header on a foreign or empty file);
        a writable open upgrades a version-1 or -2 study in place (a read-only open reads it as it is).
        """
        path = Path(path)
        if not path.is_file():
            raise MixAtlasError(
                f"{path}: no study file here; create one with `mixatlas search --study {path}`"
            )
        try:
            conn = _connect_read_only(path) if read_only else _connect(path)
            (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
            if version in (1, 2) and not read_only:
                with _transaction(conn):
                    # each column a version added, unless the file has it already
                    columns = {row["name"] for row in conn.execute("PRAGMA table_info(trials)")}
                    for column, kind in _ADDED_COLUMNS:
                        if column not in columns:
                            conn.execute(f"ALTER TABLE trials ADD COLUMN {column} {kind}")
                    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            elif version not in (1, 2, SCHEMA_VERSION):
                raise MixAtlasError(
                    f"{path}: study schema version {version}, this MixAtlas reads {SCHEMA_VERSION}; "
                    "use the matching MixAtlas version"
                )
            return cls(path, conn)
        except (sqlite3.DatabaseError, TypeError, KeyError, json.JSONDecodeError) as exc:
            raise MixAtlasError(
                f"{path}: not a readable MixAtlas study ({exc}); check the --study path"
            ) from None

    def close(self) -> None:
        self._conn.close()

    # -- stored definition ----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def space(self) -> MixtureSpace:
        return self._space

    @property
    def target(self) -> Target:
        return self._target

    @property
    def method(self) -> str:
        return self._settings["method"]

    @property
    def method_options(self) -> dict:
        return dict(self._settings["method_options"])

    @property
    def budget(self) -> int:
        return int(self._settings["budget"])

    @property
    def seed(self) -> int:
        return int(self._settings["seed"])

    @property
    def objective_spec(self) -> dict:
        return dict(self._settings["objective_spec"])

    @property
    def meta(self) -> dict:
        return dict(self._settings["meta"])

    @property
    def fidelities(self) -> Fidelities | None:
        """The fidelities (names, costs, target) of a multi-fidelity study; None for a single-fidelity one."""
        data = self._settings.get("fidelities")
        return None if data is None else Fidelities.from_dict(data)

    @property
    def budget_cost(self) -> float | None:
        """The total cost a multi-fidelity study may spend (None for a single-fidelity study)."""
        value = self._settings.get("budget_cost")
        return None if value is None else float(value)

    def cost_spent(self) -> float:
        """The summed cost of the done trials at their fidelities (0 for a single-fidelity study)."""
        fidelities = self.fidelities
        if fidelities is None:
            return 0.0
        return float(sum(fidelities.cost(t.fidelity) for t in self.trials(TrialState.DONE)))

    def settings(self) -> dict[str, Any]:
        """The stored definition as plain JSON data (space dict, target spec, method, budget, ...)."""
        return json.loads(json.dumps(self._settings))

    # -- reading trials -------------------------------------------------------------------------------
    def trials(self, state: TrialState | None = None) -> list[Trial]:
        """All trial rows in id order, or only those in `state`."""
        if state is None:
            rows = self._conn.execute("SELECT * FROM trials ORDER BY id")
        else:
            rows = self._conn.execute(
                "SELECT * FROM trials WHERE state = ? ORDER BY id", (TrialState(state).value,)
            )
        return [_trial_from_row(row) for row in rows]

    def trial(self, trial_id: int) -> Trial:
        row = self._conn.execute("SELECT * FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if row is None:
            raise KeyError(trial_id)
        return _trial_from_row(row)

    def count(self, state: TrialState) -> int:
        (n,) = self._conn.execute(
            "SELECT COUNT(*) FROM trials WHERE state = ?", (TrialState(state).value,)
        ).fetchone()
        return int(n)

    def history(self, target: Target | None = None) -> History:
        """What the optimizer may see: done params (m, d) with target utility (m,), pending+running (p, d).

        `target`: score the finished trials' metrics for another target (default: the study's own values).
        """
        done = self.trials(TrialState.DONE)
        pending = [t for t in self.trials() if not t.state.is_finished()]
        d = self._space.dim
        done_params = np.array([t.params for t in done], dtype=np.float64).reshape(len(done), d)
        if target is None:
            utility = self._target.to_utility(np.array([t.value for t in done], dtype=np.float64))
        else:
            utility = np.array([target.utility(t.metrics or {}) for t in done], dtype=np.float64)
        pending_params = np.array([t.params for t in pending], dtype=np.float64).reshape(len(pending), d)
        metrics = tuple(dict(t.metrics or {}) for t in done)
        return History(self._space, done_params, utility, pending_params, self.budget, self.seed, metrics)

    def fidelity_history(self, target: Target | None = None) -> FidelityHistory:
        """`history(target)` with each trial's fidelity and the cost budget, for a multi-fidelity study."""
        fidelities = self.fidelities
        if fidelities is None:
            raise MixAtlasError(f"{self._path}: not a multi-fidelity study (created without fidelities)")
        history = self.history(target)
        done = [fidelities.index(t.fidelity) for t in self.trials(TrialState.DONE)]
        pending = [fidelities.index(t.fidelity) for t in self.trials() if not t.state.is_finished()]
        return FidelityHistory(
            history, np.asarray(done, dtype=int), np.asarray(pending, dtype=int), fidelities,
            float(self.budget_cost),
        )

    def to_rows(self) -> list[dict]:
        """One flat dict per trial (for CSV and reports): state, value, cells `w:CONCEPT/TASK`, metrics."""
        rows = []
        for t in self.trials():
            row: dict[str, Any] = {
                "id": t.id,
                "state": t.state,
                "attempts": t.attempts,
                "retry_of": t.retry_of,
                "value": t.value,
                "cost_s": t.cost_s,
                "error": t.error,
                "worker": t.worker,
                "created_at": t.created_at,
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "trial_dir": t.trial_dir,
            }
            if t.fidelity is not None:
                row["fidelity"] = t.fidelity
            for i, concept in enumerate(t.mixture.concepts):
                for j, task in enumerate(t.mixture.tasks):
                    row[f"w:{concept}/{task}"] = float(t.mixture.weights_kt[i, j])
            for name, value in (t.metrics or {}).items():
                row[f"metric:{name}"] = value
            rows.append(row)
        return rows

    # -- state changes (each one transaction) ---------------------------------------------------------
    def add_trial(self, params: np.ndarray, fidelity: str | None = None) -> Trial:
        """Insert a `pending` trial for (d,) `params` (at `fidelity`, a multi-fidelity study's name); the
        mixture is computed and stored with it."""
        params = np.asarray(params, dtype=np.float64).reshape(self._space.dim)
        mixture = self._space.to_mixture(params)
        fidelities = self.fidelities
        if (fidelity is None) != (fidelities is None):
            raise MixAtlasError(
                f"{self._path}: a trial needs a fidelity exactly in a multi-fidelity study (got {fidelity!r})"
            )
        if fidelities is not None:
            fidelities.index(fidelity)  # an unknown name is its one-line error
        with _transaction(self._conn):
            cursor = self._conn.execute(
                "INSERT INTO trials (state, params, mixture, attempts, created_at, fidelity)"
                " VALUES ('pending', ?, ?, 1, ?, ?)",
                (json.dumps(params.tolist()), json.dumps(mixture.to_dict()), time.time(), fidelity),
            )
            trial_id = int(cursor.lastrowid)
        return self.trial(trial_id)

    def check_shareable(self, space: MixtureSpace, objective_spec: dict) -> None:
        """Raise unless this study's trials are valid evaluations in `space` under `objective_spec`."""
        if self.space.to_dict() != space.to_dict() or self.objective_spec != objective_spec:
            raise MixAtlasError(
                f"{self.path}: cannot share its trials: it searched another space or objective; "
                "share only between studies of the same atlas, space mode and objective"
            )

    def import_trials(self, other: Study, limit: int) -> list[Trial]:
        """Copy up to `limit` finished trials of `other` into this study as `done`, in one transaction.

        This is how benchmark-targeted studies share proxy runs: a study for another target over the same
        space and objective already paid for these evaluations. Only trials whose metrics cover this
        study's target are taken; each keeps its metrics, curve, cost and trial folder, and its `worker`
        records where it came from ("shared:PATH#ID"). They count toward this study's budget.
        """
        other.check_shareable(self.space, self.objective_spec)
        rows = []
        for t in other.trials(TrialState.DONE):
            try:
                value = self._target.value(t.metrics or {})
            except MixAtlasError:
                continue
            rows.append((t, value))
        rows = rows[: max(0, limit)]
        with _transaction(self._conn):
            ids = [
                int(self._conn.execute(
                    "INSERT INTO trials (state, params, mixture, metrics, curve, cost_s, value, attempts,"
                    " created_at, started_at, finished_at, worker, trial_dir)"
                    " VALUES ('done', ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                    (json.dumps(np.asarray(t.params).tolist()), json.dumps(t.mixture.to_dict()),
                     json.dumps(t.metrics), json.dumps(t.curve), t.cost_s, value, time.time(),
                     t.started_at, t.finished_at, f"shared:{other.path}#{t.id}",
                     None if t.trial_dir is None else str(t.trial_dir)),
                ).lastrowid)
                for t, value in rows
            ]  # fmt: skip
        return [self.trial(i) for i in ids]

    def start_trial(self, trial_id: int, *, trial_dir: Path, worker: str) -> Trial:
        """pending -> running."""
        with _transaction(self._conn):
            _update_state(
                self._conn, trial_id, TrialState.PENDING, TrialState.RUNNING,
                started_at=time.time(), trial_dir=str(trial_dir), worker=worker,
            )  # fmt: skip
        return self.trial(trial_id)

    def finish_trial(self, trial_id: int, result: Result, *, worker: str | None = None) -> Trial:
        """running -> done, storing metrics, curve, cost and the target value (must be finite)."""
        value = self._target.value(result.metrics)
        updates: dict[str, Any] = {
            "metrics": json.dumps(result.metrics),
            "curve": json.dumps(result.curve),
            "cost_s": result.cost_s,
            "value": value,
            "error": None,
            "finished_at": time.time(),
        }
        if worker:
            updates["worker"] = worker
        with _transaction(self._conn):
            _update_state(self._conn, trial_id, TrialState.RUNNING, TrialState.DONE, **updates)
        return self.trial(trial_id)

    def fail_trial(
        self, trial_id: int, error: str, *, retry: bool, worker: str | None = None
    ) -> Trial | None:
        """running -> failed with `error`; with `retry`, a new pending row with the same params, same txn.

        Returns the retry trial, or None.
        """
        failed = self.trial(trial_id)
        updates: dict[str, Any] = {"error": error, "finished_at": time.time()}
        if worker:
            updates["worker"] = worker
        with _transaction(self._conn):
            _update_state(self._conn, trial_id, TrialState.RUNNING, TrialState.FAILED, **updates)
            retry_id = None
            if retry:
                # Copy the stored params/mixture text so the retry evaluates bit-identical weights.
                root = failed.retry_of if failed.retry_of is not None else failed.id
                cursor = self._conn.execute(
                    "INSERT INTO trials (state, params, mixture, attempts, retry_of, created_at, fidelity)"
                    " SELECT 'pending', params, mixture, attempts + 1, ?, ?, fidelity"
                    " FROM trials WHERE id = ?",
                    (root, time.time(), trial_id),
                )
                retry_id = cursor.lastrowid
        return None if retry_id is None else self.trial(retry_id)

    def requeue_interrupted(self) -> list[Trial]:
        """Trials left `running` by a killed search go back to pending (same params); see `requeue`."""
        return self.requeue([t.id for t in self.trials(TrialState.RUNNING)])

    def requeue(self, trial_ids: list[int]) -> list[Trial]:
        """Running trials whose run stopped under them (kill, Ctrl-C) go back to pending in one transaction,
        counted in `interruptions`: an interruption is not a failure and uses up no retry."""
        with _transaction(self._conn):
            for trial_id in trial_ids:
                self._conn.execute(
                    "UPDATE trials SET state = 'pending', interruptions = interruptions + 1,"
                    " started_at = NULL WHERE id = ? AND state = 'running'",
                    (trial_id,),
                )
        return [self.trial(trial_id) for trial_id in trial_ids]

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the study's run lock so two searches never drive one study at once, whatever path each was
        given: an `flock` on the database file itself (on its inode, so symlinks and hard links alike lead
        to the one lock) and on `<db>.lock` beside the file's real path, which names the holder's pid.

        The OS drops both when the process dies, so a SIGKILLed search never blocks its resume. SQLite's own
        locks are POSIX record locks, which Linux keeps apart from `flock` locks on the same file.
        """
        real = self._path.resolve()
        key, db_fd = _db_lock_fd(real)
        with _DB_LOCKS_GUARD:
            held_here = key in _DB_LOCKS_HELD
            if not held_here:
                try:
                    fcntl.flock(db_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    _DB_LOCKS_HELD.add(key)
                except BlockingIOError:
                    held_here = None
        if held_here is not False:  # True: this process holds it (another Study object); None: another one
            holder = f"pid {os.getpid()}" if held_here else _lock_holder(real, key)
            raise MixAtlasError(
                f"{self._path}: the study is being searched by {holder}; wait for it or stop it first"
            )
        try:
            busy = f"{self._path}: the study is being searched by {{holder}}; wait for it or stop it first"
            with pid_lock(real.with_name(real.name + ".lock"), busy):  # also what an older MixAtlas takes
                yield
        finally:
            with _DB_LOCKS_GUARD:
                fcntl.flock(db_fd, fcntl.LOCK_UN)
                _DB_LOCKS_HELD.discard(key)


# The descriptors `Study.exclusive` flocks, one per database file (st_dev, st_ino), opened once and never
# closed: closing any descriptor of a file drops every POSIX lock this process holds on it, SQLite's shared
# lock of each open connection included (https://www.sqlite.org/howtocorrupt.html, section 2.2), so a close
# while a connection is open could let another process delete the WAL under it. They end with the process.
_DB_LOCK_FDS: dict[tuple[int, int], int] = {}
_DB_LOCKS_HELD: set[tuple[int, int]] = set()  # flocked now by an `exclusive` block of this process
_DB_LOCKS_GUARD = threading.Lock()


def _db_lock_fd(real: Path) -> tuple[tuple[int, int], int]:
    """The (inode key, descriptor) to flock for the database file at `real`; see `_DB_LOCK_FDS`."""
    info = os.stat(real)
    key = (info.st_dev, info.st_ino)
    with _DB_LOCKS_GUARD:
        if key not in _DB_LOCK_FDS:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)  # flock needs no write access
            opened = os.fstat(fd)
            key = (opened.st_dev, opened.st_ino)  # the file that was opened, if it was replaced meanwhile
            if key in _DB_LOCK_FDS:  # kept too (never closed, see above); the first one is used
                _DB_LOCK_FDS[(-1, fd)] = fd
            else:
                _DB_LOCK_FDS[key] = fd
        return key, _DB_LOCK_FDS[key]


def _lock_holder(real: Path, key: tuple[int, int]) -> str:
    """Who holds the flock on the database file: `pid N` from /proc/locks (Linux), else from the `<db>.lock`
    file of the same real path while that one is held too, else "another process"."""
    dev, ino = key
    exact, same_inode = [], []
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2162705 0 EOF" ("->" = a waiter)
            if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
                continue
            major, minor, inode = [*fields[5].split(":"), "", ""][:3]
            if inode != str(ino):
                continue
            same_inode.append(fields[4])
            with contextlib.suppress(ValueError):
                if (int(major, 16), int(minor, 16)) == (os.major(dev), os.minor(dev)):
                    exact.append(fields[4])
    for pids in (exact, same_inode):
        if len(set(pids)) == 1:
            return f"pid {pids[0]}"
    with contextlib.suppress(OSError), open(real.with_name(real.name + ".lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)  # not held: what it says is stale
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "another process"
    return "another process"

def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so every state change is one write txn.
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: commits survive a process kill
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _update_state(
    conn: sqlite3.Connection, trial_id: int, old: TrialState, new: TrialState, **columns: Any
) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    cursor = conn.execute(
        f"UPDATE trials SET state = ?, {assignments} WHERE id = ? AND state = ?",
        (new.value, *columns.values(), trial_id, old.value),
    )
    if cursor.rowcount != 1:
        raise RuntimeError(f"trial {trial_id} is not {old}; cannot move it to {new}")


def _trial_from_row(row: sqlite3.Row) -> Trial:
    value = row["value"]
    return Trial(
        id=row["id"],
        state=TrialState(row["state"]),
        params=np.asarray(json.loads(row["params"]), dtype=np.float64),
        mixture=Mixture.from_dict(json.loads(row["mixture"])),
        metrics=None if row["metrics"] is None else json.loads(row["metrics"]),
        curve=json.loads(row["curve"]) if row["curve"] else [],
        cost_s=row["cost_s"],
        value=None if value is None or not math.isfinite(value) else float(value),
        error=row["error"],
        attempts=row["attempts"],
        interruptions=row["interruptions"] if "interruptions" in row.keys() else 0,  # noqa: SIM118 (Row: in = values)
        retry_of=row["retry_of"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker=row["worker"],
        trial_dir=row["trial_dir"],
        fidelity=row["fidelity"] if "fidelity" in row.keys() else None,  # noqa: SIM118 (a v2 file read as is)
    )
