"""Loaders of the published mixture -> loss runs (`shared/data/public-mixture-runs`) as pool problems.

- mixinglaws (Ye et al. 2024), every `<family>/<size>.txt` (5Mix, RedPajama, 3Mix, 2Mix and the
  continual-training `ct` runs, whose validation sets include non-Pile ones such as starcoder.python):
  lines `CKPT_PATH VALID_BIN_PATH LOSS`; the mixture is in the checkpoint
  folder `<size>_<id>-p1-...-pn` (domain order undocumented: domains are named d1..dn), the step is the
  last path component, the validation domain is `pythia-pile.valid.<Domain>.bin` (or `<name>.bin`);
  lines of checkpoints that are not mixtures (a base model) are skipped. Run ids > 900 are the
  authors' predicted/baseline runs and are excluded. Repeated lines are averaged.
- autoscale (Kang et al. 2024): 15 perturbations of the uniform 7-domain RedPajama mixture (one domain
  cut to 1/5x or raised to 3x, then renormalized) with per-domain perplexities.
Every pool gets a metric per validation domain plus `valid_avg`, the `valid_weight.json` weighted
average over the domains present (mixinglaws) or the published `ppl_avg` (autoscale).
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.pool import PoolProblem

_REPO = Path(__file__).resolve().parents[3]
_DATA = Path("shared") / "data" / "public-mixture-runs"
AVERAGE_METRIC = "valid_avg"
MIN_POOL_ROWS = 10  # smaller tables are listed by the benchmark but too small for a pool search
_RUN = re.compile(r"^(?:.*_)?(\d+)-([0-9.]+(?:-[0-9.]+)+)$")
_DOMAIN = re.compile(r"^(?:pythia-pile\.valid\.)?(.+)\.bin$")


def public_problems(root: Path | None = None) -> dict[str, dict]:
    """Every public table under the data folder: name -> loader kwargs. Each mixinglaws
    `<family>/<size>.txt` is "<family lowercased>-<size>" (e.g. "5mix-70M"); AutoScale is "autoscale".
    Tables dropped into the folder in the same formats are found too."""
    base = root or default_root()
    found: dict[str, dict] = {}
    for folder in sorted(p for p in (base / "mixinglaws").glob("*") if p.is_dir()):
        for table in sorted(folder.glob("*.txt"), key=lambda t: _size_number(t.stem)):
            if table.stem != "proportions":
                found[f"{folder.name.lower()}-{table.stem}"] = {"family": folder.name, "size": table.stem}
    if (base / "autoscale" / "ddo_gpt2large_ppl_matrix.csv").exists():
        found["autoscale"] = {"family": "autoscale"}
    return found


def default_root() -> Path:
    """The data folder: $MIXATLAS_PUBLIC_RUNS if set, else shared/data/public-mixture-runs inside or
    beside the repository."""
    import os

    if os.environ.get("MIXATLAS_PUBLIC_RUNS"):
        return Path(os.environ["MIXATLAS_PUBLIC_RUNS"])
    inside = _REPO / _DATA
    return inside if inside.exists() else _REPO.parent / _DATA


def read_mixinglaws(path: Path) -> dict[tuple[str, str, str], list[float]]:
    """{(run folder, step, validation domain): [losses]} from one mixinglaws results file."""
    runs: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise MixAtlasError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise MixAtlasError(f"{path}:{number}: expected 'CKPT_PATH VALID_BIN_PATH LOSS'")
        ckpt = [p for p in parts[0].split("/") if p]
        domain = _DOMAIN.match(parts[1].rsplit("/", 1)[-1])
        if len(ckpt) < 2 or domain is None:
            raise MixAtlasError(f"{path}:{number}: cannot read the run folder, step or validation domain")
        try:
            runs[(ckpt[-2], ckpt[-1], domain.group(1))].append(float(parts[2]))
        except ValueError:
            raise MixAtlasError(f"{path}:{number}: loss {parts[2]!r} is not a number") from None
    return runs


def parse_run(folder: str) -> tuple[int, np.ndarray] | None:
    """(run id, proportions (n,)) of a checkpoint folder `<size>_<id>-p1-...-pn`, or None."""
    match = _RUN.match(folder)
    if match is None:
        return None
    return int(match.group(1)), np.array([float(p) for p in match.group(2).split("-")])


def mixinglaws_pool(family: str, size: str, step: str | None = None, root: Path | None = None) -> PoolProblem:
    """Pool of one mixinglaws family at one model size and training step.

    `step` None: the final step, i.e. the largest step reached by the most design runs (some runs were
    continued further than the others). Metrics: one loss per validation domain and `valid_avg`.
    """
    path = (root or default_root()) / "mixinglaws" / family / f"{size}.txt"
    if not path.exists():
        raise MixAtlasError(f"{path}: no such results file (sizes: {_sizes(path.parent)})")
    runs = {key: np.mean(values) for key, values in read_mixinglaws(path).items()}
    design = {folder for folder, _, _ in runs if (parsed := parse_run(folder)) and parsed[0] <= 900}
    per_step: dict[str, set[str]] = defaultdict(set)
    for folder, run_step, _ in runs:
        if folder in design:
            per_step[run_step].add(folder)
    if not per_step:
        raise MixAtlasError(f"{path}: no design runs (ids <= 900) found")
    if step is None:
        step = max(per_step, key=lambda s: (len(per_step[s]), _step_number(s)))
    elif step not in per_step:
        raise MixAtlasError(
            f"{path}: no runs at step {step!r}; steps: {', '.join(sorted(per_step, key=_step_number))}"
        )
    domains = sorted({d for folder, s, d in runs if s == step and folder in per_step[step]})
    folders = sorted(per_step[step], key=lambda f: parse_run(f)[0])
    weights = np.stack([parse_run(f)[1] for f in folders])
    weights = weights / weights.sum(axis=1, keepdims=True)
    losses = np.array([[runs.get((f, step, d), np.nan) for d in domains] for f in folders])
    average = _weighted_average(
        losses, domains, (root or default_root()) / "mixinglaws" / "valid_weight.json"
    )
    names = [f"d{i + 1}" for i in range(weights.shape[1])]
    metrics = np.concatenate([losses, average[:, None]], axis=1)
    return PoolProblem.from_arrays(
        names, weights, [*domains, AVERAGE_METRIC], metrics, source=f"{path}@{step}"
    )


def autoscale_pool(root: Path | None = None) -> PoolProblem:
    """Pool of the AutoScale perturbation matrix (15 mixtures of 7 domains); `valid_avg` = ppl_avg."""
    path = (root or default_root()) / "autoscale" / "ddo_gpt2large_ppl_matrix.csv"
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise MixAtlasError(f"{path}: cannot read ({exc})") from None
    if not rows or "perturbation" not in rows[0] or "ppl_avg" not in rows[0]:
        raise MixAtlasError(f"{path}: expected rows with columns perturbation, ppl_<domain>..., ppl_avg")
    domains = [name[len("ppl_") :] for name in rows[0] if name.startswith("ppl_") and name != "ppl_avg"]
    weights = []
    for line, row in enumerate(rows, start=2):
        w = np.ones(len(domains))
        match = re.match(r"^(.+)_(reduced_1over5x|increased_3x)$", row["perturbation"])
        if match:
            if match.group(1) not in domains:
                raise MixAtlasError(f"{path}:{line}: perturbation of unknown domain {match.group(1)!r}")
            w[domains.index(match.group(1))] = 0.2 if match.group(2).startswith("reduced") else 3.0
        elif row["perturbation"] != "uniform_base":
            raise MixAtlasError(f"{path}:{line}: unknown perturbation {row['perturbation']!r}")
        weights.append(w / w.sum())
    try:
        metrics = np.array(
            [[float(row[f"ppl_{d}"]) for d in domains] + [float(row["ppl_avg"])] for row in rows]
        )
    except (TypeError, ValueError) as exc:
        raise MixAtlasError(f"{path}: a perplexity cell is not a number ({exc})") from None
    return PoolProblem.from_arrays(
        domains, np.array(weights), [*domains, AVERAGE_METRIC], metrics, source=str(path)
    )


def public_pool(name: str, root: Path | None = None) -> PoolProblem:
    """One of `public_problems()` by name (e.g. "5mix-70M", "autoscale")."""
    problems = public_problems(root)
    if name not in problems:
        raise MixAtlasError(f"public problem {name!r} unknown; choose from {', '.join(problems)}")
    spec = problems[name]
    if spec["family"] == "autoscale":
        return autoscale_pool(root)
    return mixinglaws_pool(spec["family"], spec["size"], root=root)


def _weighted_average(losses_cd: np.ndarray, domains: list[str], weight_file: Path) -> np.ndarray:
    """(c,) valid_weight.json-weighted mean over the domains present (weights renormalized)."""
    try:
        table = json.loads(weight_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MixAtlasError(f"{weight_file}: cannot read validation weights ({exc})") from None
    weights = np.array([float(table.get(d, 0.0)) for d in domains])
    if weights.sum() <= 0:
        weights = np.ones(len(domains))
    return losses_cd @ (weights / weights.sum())


def _size_number(size: str) -> float:
    """70M -> 7e7, 1B -> 1e9 (sort key; unknown suffixes last)."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(size[-1:].upper())
    try:
        return float(size[:-1]) * scale if scale else float("inf")
    except ValueError:
        return float("inf")


def _step_number(step: str) -> float:
    return float(step) if step.isdigit() else float("inf")


def _sizes(folder: Path) -> str:
    return ", ".join(sorted(p.stem for p in folder.glob("*.txt") if p.stem != "proportions")) or "none"
