"""The command objective: a team's own trainer, run as a subprocess per trial (argv template, no shell).

Contract: the command reads the mixture from `{mixture_json}` and writes `{trial_dir}/metrics.json`
(`{"metrics": {...}, "curve": [[step, loss], ...]}`); its stdout/stderr are kept in the trial folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, TrialContext, TrialFolder
from mixatlas.processes import GROUP_RECORD, die_with_parent, record_group
from mixatlas.space import Mixture

PLACEHOLDERS = ("{mixture_json}", "{trial_dir}", "{trial_id}", "{seed}", "{fidelity}")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


class CommandFailed(RuntimeError):
    """The command ran but did not produce a result (non-zero exit, timeout, not found); one-line reason."""


class CommandObjective:
    """Runs `argv` (placeholders filled in) for each trial and reads the metrics.json it writes.

    Args:
        argv: the command and its arguments; `{mixture_json}`, `{trial_dir}`, `{trial_id}`, `{seed}` and
            `{fidelity}` (the trial's fidelity name in a multi-fidelity search, else empty) are replaced
            in every element. No shell is involved.
        timeout_s: kill the command (and its process group) after this many seconds.
        env: extra environment variables for the command.
    """

    def __init__(
        self, argv: list[str], timeout_s: float | None = None, env: dict[str, str] | None = None
    ) -> None:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise MixAtlasError("command objective: give the command as a non-empty list of strings (argv)")
        self.argv = list(argv)
        self.timeout_s = timeout_s
        self.env = dict(env or {})

    def command_for(self, ctx: TrialContext) -> list[str]:
        """The argv of one trial, placeholders replaced."""
        values = {
            "{mixture_json}": str(TrialFolder(Path(ctx.trial_dir)).mixture_json),
            "{trial_dir}": str(ctx.trial_dir),
            "{trial_id}": str(ctx.trial_id),
            "{seed}": str(ctx.seed),
            "{fidelity}": ctx.fidelity or "",
        }
        # one pass: a value that itself contains "{seed}" (say, a --runs-dir) is never substituted again
        return [_PLACEHOLDER.sub(lambda m: values[m.group(0)], arg) for arg in self.argv]

    def evaluate(self, mixture: Mixture, ctx: TrialContext) -> Result:
        trial_dir = Path(ctx.trial_dir)
        folder = TrialFolder(trial_dir)
        folder.start(mixture)  # the command's input; drops a stale metrics.json of an earlier attempt
        metrics_path = folder.metrics_json
        argv = self.command_for(ctx)
        env = {**os.environ, **self.env}
        started = time.monotonic()
        with open(trial_dir / "stdout.log", "ab") as out, open(trial_dir / "stderr.log", "ab") as err:
            try:
                # Own session: on timeout the whole process group (the trainer's children too) is killed.
                # It dies with this worker (PR_SET_PDEATHSIG) and its group is recorded in the trial folder,
                # so a resumed run ends whatever of it survived a kill before running the trial again.
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=err, env=env, start_new_session=True, preexec_fn=die_with_parent
                )
            except OSError as exc:
                raise CommandFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
            record = trial_dir / GROUP_RECORD
            try:
                record_group(record, proc.pid)
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise CommandFailed(f"command timed out after {self.timeout_s:g} s") from None
            except BaseException:
                _kill_group(proc)
                raise
            finally:
                record.unlink(missing_ok=True)
        if code != 0:
            raise CommandFailed(f"command exited with code {code}{_last_line(trial_dir / 'stderr.log')}")
        if not metrics_path.is_file():
            raise CommandFailed(f"command exited 0 but wrote no {metrics_path}")
        result = Result.load(metrics_path)
        if result.cost_s is None:
            result.cost_s = time.monotonic() - started
        return result


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _last_line(log: Path) -> str:
    """`: <last non-empty stderr line>` to make a failure reason self-explaining, or ''."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return f": {lines[-1][:200]}" if lines else ""
