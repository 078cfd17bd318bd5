"""The lmms-eval template of the command objective: the team's trainer, then lmms-eval, then metrics.json.

`LmmsEvalTemplate` expands to a command objective whose argv runs this module (`python -m
mixatlas.objectives.lmms_eval ... -- TRAIN ARGV`), so each trial is still one subprocess with the command
objective's contract, timeout and logs. The runner (`main`):

1. runs the training command (placeholders already filled: `{mixture_json}`, `{trial_dir}`, `{seed}`...);
   it must leave a checkpoint where `model_args` points (default `{trial_dir}/checkpoint`) and may log
   `{"step": s, "loss": l}` lines to `{trial_dir}/train_log.jsonl` (the curve);
2. runs `python -m lmms_eval --model M --model_args A --tasks T1,T2 --batch_size B --output_path
   {trial_dir}/lmms_eval` (the command prefix is configurable, e.g. `accelerate launch ... -m lmms_eval`);
3. reads lmms-eval's newest `*_results.json` and writes `{trial_dir}/metrics.json`, metric names
   `<task>/<metric>` (lmms-eval's `<metric>,none` keys) or `<task>/<metric>@<filter>` for other filters;
   `*_stderr` entries, `alias` and non-numbers are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result
from mixatlas.objectives.command import CommandObjective

DEFAULT_MODEL = "llava_onevision"
DEFAULT_MODEL_ARGS = "pretrained={trial_dir}/checkpoint"
DEFAULT_EVAL_COMMAND = ("python", "-m", "lmms_eval")
RESULTS_GLOB = "*_results.json"
TRAIN_LOG = "train_log.jsonl"


@dataclass(frozen=True)
class LmmsEvalTemplate:
    """What `--objective lmms-eval` needs: the training argv and the lmms-eval tasks (and model wrapper).

    Attributes:
        train: the team's training command as argv, with the command objective's placeholders.
        tasks: lmms-eval task names, e.g. ["chartqa", "docvqa_val"].
        model: lmms-eval `--model` (the model wrapper), e.g. llava_onevision, llava, qwen2_vl.
        model_args: lmms-eval `--model_args`; `{trial_dir}` is filled in per trial.
        eval_command: the lmms-eval launcher, e.g. ["accelerate", "launch", "--num_processes", "8", "-m",
            "lmms_eval"]; its own arguments are appended.
        batch_size: lmms-eval `--batch_size`.
    """

    train: list[str]
    tasks: list[str]
    model: str = DEFAULT_MODEL
    model_args: str = DEFAULT_MODEL_ARGS
    eval_command: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_COMMAND))
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not self.train or not all(isinstance(arg, str) and arg for arg in self.train):
            raise MixAtlasError("lmms-eval objective: give the training command (--command \"python train.py "
                                "{mixture_json} {trial_dir}\")")
        if not self.tasks or not all(isinstance(task, str) and task.strip() for task in self.tasks):
            raise MixAtlasError("lmms-eval objective: give the lmms-eval tasks (--lmms-tasks "
                                "chartqa,docvqa_val)")
        if not self.eval_command:
            raise MixAtlasError("lmms-eval objective: --lmms-eval-command is empty; default: "
                                "python -m lmms_eval")

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LmmsEvalTemplate:
        """From an objective spec `{"kind": "lmms-eval", "train": [...], "tasks": [...], ...}`."""
        optional = {key: spec[key] for key in ("model", "model_args", "eval_command", "batch_size")
                    if spec.get(key) is not None}
        return cls(list(spec.get("train") or []), list(spec.get("tasks") or []), **optional)

    def spec(self) -> dict[str, Any]:
        """The objective spec a study stores (inverse of `from_spec`)."""
        return {"kind": "lmms-eval", "train": list(self.train), "tasks": list(self.tasks),
                "model": self.model, "model_args": self.model_args, "eval_command": list(self.eval_command),
                "batch_size": self.batch_size}

    def objective(self, timeout_s: float | None = None, env: dict | None = None) -> CommandObjective:
        """The command objective this template expands to."""
        return CommandObjective(self.argv(), timeout_s=timeout_s, env=env)

    def argv(self) -> list[str]:
        """The command objective's argv: this module's runner, then `--` and the training command."""
        return [
            sys.executable, "-m", "mixatlas.objectives.lmms_eval", "--trial-dir", "{trial_dir}",
            "--tasks", ",".join(task.strip() for task in self.tasks), "--model", self.model,
            "--model-args", self.model_args, "--batch-size", str(self.batch_size),
            "--eval-command", shlex.join(self.eval_command), "--", *self.train,
        ]


def eval_argv(eval_command: list[str], model: str, model_args: str, tasks: str, batch_size: int,
              output_path: Path) -> list[str]:
    """The lmms-eval command line (the flags of lmms-eval's own CLI)."""
    return [*eval_command, "--model", model, "--model_args", model_args, "--tasks", tasks,
            "--batch_size", str(batch_size), "--output_path", str(output_path)]


def parse_results(data: dict[str, Any], origin: str = "lmms-eval results") -> dict[str, float]:
    """Metrics from an lmms-eval results JSON (`{"results": {task: {"metric,filter": value}}}`, plus
    `"groups"` when task groups ran): `{"chartqa/relaxed_overall": 0.61, ...}`."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise MixAtlasError(f'{origin}: not an lmms-eval results file (no "results" mapping)')
    metrics: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, scores in (data.get(section) or {}).items():
            if not isinstance(scores, dict):
                continue
            for key, value in scores.items():
                metric, _, filter_name = str(key).partition(",")
                if metric == "alias" or metric.endswith("_stderr") or isinstance(value, bool):
                    continue
                if not isinstance(value, int | float) or not math.isfinite(value):
                    continue
                name = f"{task}/{metric}" if filter_name in ("", "none") else f"{task}/{metric}@{filter_name}"
                metrics.setdefault(name, float(value))
    if not metrics:
        raise MixAtlasError(f"{origin}: no numeric metric in its results; did lmms-eval evaluate anything?")
    return metrics


def newest_results(output_path: Path) -> Path:
    """The newest `*_results.json` under lmms-eval's `--output_path` (it writes MODEL/DATE_results.json)."""
    found = sorted(Path(output_path).rglob(RESULTS_GLOB), key=lambda path: (path.stat().st_mtime, path.name))
    if not found:
        raise MixAtlasError(f"{output_path}: lmms-eval wrote no {RESULTS_GLOB}; see the trial's stderr.log")
    return found[-1]


def read_curve(trial_dir: Path) -> list[list[float]]:
    """[[step, loss], ...] from `TRIAL/train_log.jsonl` (`{"step": s, "loss": l}` lines); [] if absent."""
    log = Path(trial_dir) / TRAIN_LOG
    if not log.is_file():
        return []
    curve = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            curve.append([float(record["step"]), float(record["loss"])])
        except (ValueError, KeyError, TypeError):
            raise MixAtlasError(f'{log}:{number}: expected {{"step": s, "loss": l}}') from None
    return curve


def run_trial(train: list[str], trial_dir: Path, tasks: str, model: str, model_args: str, batch_size: int,
              eval_command: list[str]) -> dict[str, Any]:
    """Train, evaluate with lmms-eval, write and return `TRIAL/metrics.json`'s content.

    Raises `MixAtlasError` naming the step that failed (its output is in the trial's logs)."""
    trial_dir = Path(trial_dir)
    for step, argv in (("training command", train),
                       ("lmms-eval", eval_argv(eval_command, model, model_args, tasks, batch_size,
                                               trial_dir / "lmms_eval"))):
        try:
            code = subprocess.run(argv, check=False).returncode
        except OSError as exc:
            raise MixAtlasError(f"{step}: cannot start {argv[0]!r} ({exc.strerror or exc})") from None
        if code != 0:
            raise MixAtlasError(f"{step} exited with code {code}: {shlex.join(argv)[:300]}")
    results = newest_results(trial_dir / "lmms_eval")
    try:
        data = json.loads(results.read_text())
    except (OSError, ValueError) as exc:
        raise MixAtlasError(f"{results}: unreadable lmms-eval results ({exc})") from None
    result = Result(metrics=parse_results(data, str(results)), curve=read_curve(trial_dir))
    result.save(trial_dir / "metrics.json")
    return result.to_dict()


def main(argv: list[str] | None = None) -> int:
    """`python -m mixatlas.objectives.lmms_eval --trial-dir D --tasks T [...] -- TRAIN ARGV`."""
    parser = argparse.ArgumentParser(prog="python -m mixatlas.objectives.lmms_eval",
                                     description="Train, run lmms-eval, write TRIAL_DIR/metrics.json.")
    parser.add_argument("--trial-dir", required=True, type=Path)
    parser.add_argument("--tasks", required=True, help="lmms-eval tasks, comma-separated")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--model-args", default=DEFAULT_MODEL_ARGS)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--eval-command", default=shlex.join(DEFAULT_EVAL_COMMAND))
    parser.add_argument("train", nargs=argparse.REMAINDER, help="-- then the training command")
    args = parser.parse_args(argv)
    train = args.train[1:] if args.train[:1] == ["--"] else args.train
    if not train:
        parser.error("give the training command after --")
    try:
        run_trial(train, args.trial_dir, args.tasks, args.model, args.model_args, args.batch_size,
                  shlex.split(args.eval_command))
    except MixAtlasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
