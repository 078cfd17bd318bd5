"""`mixatlas demo`: the whole pipeline offline on a synthetic corpus, resumable stage by stage.

corpus (synthetic) -> atlas (`pixels` embedder) -> the paper's per-axis searches (task axis, concept axis)
with gp-ucb and the regmix / random / uniform baselines at one equal budget, plus a joint gp-ucb search ->
recipe -> materialized llava manifest -> HTML report. Every stage leaves its output in OUT and is skipped
when that output is already complete, so re-running after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.console import console, progress_bar
from mixatlas.objectives.base import Target
from mixatlas.objectives.proxy import ProxyObjective
from mixatlas.processes import preload_in_workers
from mixatlas.search.config import SearchConfig

AXIS_METHODS = ("gp-ucb", "regmix", "random", "uniform")
# A benchmark-targeted recipe (the paper's point): the average over all benchmarks is flat near uniform
# on a balanced corpus, a chart + document target is not.
TARGET = "0.5*chart-vqa/nll + 0.5*document-ocr/nll"
DEMO_TARGET = Target.parse(TARGET, minimize=True)
STAGES = 7
FINAL_SEED = 10_000  # final re-evaluations use seeds FINAL_SEED + r, never used by a search trial


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run (the full default and `--quick` differ only here)."""

    corpus_samples: int
    k: int
    budget: int  # proxy runs per study, equal for every method
    joint_budget: int
    manifest_samples: int  # the planned run's length: the epoch cap w * N <= count * max_epochs uses it
    proxy: dict[str, Any] = field(default_factory=dict)  # ProxyConfig fields
    eval_per_benchmark: int = 40
    final_seeds: int = 2  # fresh seeds, shared by all methods, at which each recommendation is re-trained
    max_epochs: float = 4.0
    parallel: int = 2
    seed: int = 0


FULL = DemoPlan(
    corpus_samples=1500, k=8, budget=12, joint_budget=16, final_seeds=3,
    proxy={"steps": 40, "batch_size": 8, "warmup_steps": 3, "eval_samples": 16, "eval_generate": False,
           "max_len": 96, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 384, "lm_hidden": 64,
                                                      "vision_hidden": 32, "vision_layers": 1}},
    manifest_samples=1500,
)
QUICK = DemoPlan(
    corpus_samples=400, k=3, budget=3, joint_budget=3,
    proxy={"steps": 6, "batch_size": 4, "warmup_steps": 1, "eval_samples": 8, "eval_generate": False,
           "max_len": 96, "image_size": 32, "tiny": {"patch_size": 8, "vocab_size": 300,
                                                      "lm_hidden": 32, "vision_hidden": 32,
                                                      "lm_layers": 1, "vision_layers": 1}},
    manifest_samples=400, eval_per_benchmark=12, final_seeds=1,
)


@dataclass(frozen=True)
class DemoStudy:
    """One of the demo's searches: the paper axis it searches, its method and budget, and its file."""

    axis: str
    method: str
    budget: int
    path: Path

    @property
    def name(self) -> str:
        """"task-gp-ucb": the study's folder and its key in final_eval.json."""
        return f"{self.axis}-{self.method}"


@dataclass(frozen=True)
class DemoOutputs:
    """Where the demo left its artifacts."""

    corpus: Path
    atlas: Path
    studies: list[DemoStudy]
    recipe: Path
    manifest: Path
    report: Path
    final: dict[str, list[float]]  # study name -> target value of its recommendation at each final seed
    elapsed_s: float


def study_path(out: Path, axis: str, method: str) -> Path:
    return out / "studies" / f"{axis}-{method}" / "study.db"


def run_demo(out: Path, quick: bool = False, plan: DemoPlan | None = None) -> DemoOutputs:
    """Run (or resume) the demo in folder `out`; returns the artifact paths. See the module docstring."""
    plan = plan or (QUICK if quick else FULL)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Each of the `parallel` proxy workers gets its share of the cores (the workers inherit the variable).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.parallel)))
    # The atlas workers start this process's one fork server, before any proxy trial: name the trials'
    # imports now, or every trial's fresh worker imports torch + transformers again (~4 s each)
    preload_in_workers(["mixatlas.search.loop", *ProxyObjective.worker_imports])
    started = time.monotonic()
    console.rule(f"MixAtlas demo{' (quick)' if quick else ''} -> {out}")

    with _stage(1, f"synthetic corpus ({plan.corpus_samples} samples)"):
        corpus = _corpus(out, plan)
    with _stage(2, f"atlas: pixels embedder, k={plan.k}"):
        atlas = _atlas(out, corpus, plan)
    from mixatlas.search.loop import open_executor

    studies = _study_runs(out, plan)
    proxy_yaml = _proxy_yaml(out, plan)
    with open_executor(SearchConfig(parallel=plan.parallel), out / "studies") as executor:
        with _stage(3, f"searches: {len(studies)} studies, {sum(s.budget for s in studies)} proxy runs, "
                       f"{plan.parallel} in parallel"):
            _searches(studies, atlas.dir, proxy_yaml, plan, executor)
        with _stage(4, f"final evaluation: every recommendation re-trained at {plan.final_seeds} fresh "
                       "seed(s) shared by all methods"):
            final = _final_evaluation(out, studies, plan, executor)
    with _stage(5, "recipe: one per gp-ucb study; the best re-evaluated one is recipe.yaml"):
        recipe = _recipe(out, studies, final)
    with _stage(6, f"materialize {plan.manifest_samples} samples (llava manifest)"):
        manifest = _materialize(out, atlas, recipe, plan)
    with _stage(7, "report"):
        report = _report(out, studies, atlas, recipe)
    elapsed_s = time.monotonic() - started
    return DemoOutputs(corpus, atlas.dir, studies, recipe, manifest, report, final, elapsed_s)


@contextmanager
def _stage(number: int, title: str) -> Iterator[None]:
    console.print(f"[bold][{number}/{STAGES}][/] {title}")
    started = time.monotonic()
    yield
    console.print(f"      [dim]{time.monotonic() - started:.0f} s[/]")


def _study_runs(out: Path, plan: DemoPlan) -> list[DemoStudy]:
    """Every study: the 4 methods on each paper axis, then gp-ucb on the joint one."""
    runs = [(axis, method, plan.budget) for axis in ("task", "concept") for method in AXIS_METHODS]
    runs.append(("joint", "gp-ucb", plan.joint_budget))
    return [DemoStudy(axis, method, budget, study_path(out, axis, method)) for axis, method, budget in runs]


def _proxy_yaml(out: Path, plan: DemoPlan) -> Path:
    """The plan's proxy config as OUT/proxy.yaml (what `--proxy-config` would name)."""
    from mixatlas.objectives.proxy import ProxyConfig

    path = out / "proxy.yaml"
    ProxyConfig.from_dict(plan.proxy).to_yaml(path)
    return path


def _corpus(out: Path, plan: DemoPlan) -> Path:
    from mixatlas.corpus.synth import BENCHMARKS, synthesize

    corpus = out / "corpus"
    if (corpus / "synth.json").is_file():  # written last by `synthesize`
        console.print("  done already")
        return corpus
    total = plan.corpus_samples + plan.eval_per_benchmark * len(BENCHMARKS)
    with progress_bar(True, "rendering images", total=total, transient=True) as bar:
        synthesize(corpus, samples=plan.corpus_samples, seed=plan.seed,
                   eval_per_benchmark=plan.eval_per_benchmark, workers=plan.parallel, progress=bar)
    return corpus


def _atlas(out: Path, corpus: Path, plan: DemoPlan) -> Any:
    from mixatlas.atlas import Atlas, build_atlas

    folder = out / "atlas"
    if (folder / "atlas.json").is_file():
        console.print("  done already")
        return Atlas.load(folder)
    return build_atlas(corpus, folder, embedder="pixels", k=plan.k, seed=plan.seed, workers=plan.parallel)


def _searches(studies: list[DemoStudy], atlas_dir: Path, proxy_yaml: Path, plan: DemoPlan,
              executor: Any) -> None:
    """The per-axis studies (4 methods x task/concept) and the joint gp-ucb study, run or resumed through
    the functions `mixatlas search` uses."""
    from mixatlas.search.loop import run_search
    from mixatlas.search.setup import open_study
    from mixatlas.search.study import TrialState

    for run in studies:
        study, objective = open_study(_study_config(run, atlas_dir, proxy_yaml, plan))
        try:
            if study.count(TrialState.DONE) >= study.budget:
                console.print(f"  {run.name}: done already")
                continue
            console.print(f"  {run.axis} axis, {run.method}: {study.budget} proxy runs")
            run_search(study, objective, executor, parallel=plan.parallel)
        finally:
            study.close()


def _study_config(run: DemoStudy, atlas_dir: Path, proxy_yaml: Path, plan: DemoPlan) -> SearchConfig:
    """What `mixatlas search` would be given for this study; an existing study resumes as it is stored."""
    if run.path.exists():
        return SearchConfig(study=run.path)
    return SearchConfig(
        atlas=atlas_dir, space=run.axis, planned_samples=plan.manifest_samples, max_epochs=plan.max_epochs,
        objective="proxy", proxy_config=proxy_yaml, target=TARGET, minimize=True, method=run.method,
        budget=run.budget, seed=plan.seed, study=run.path, parallel=plan.parallel,
        # common random numbers: every trial trains at the study seed, so trials differ by mixture only
        trial_seeds="shared",
    )


def _final_evaluation(out: Path, studies: list[DemoStudy], plan: DemoPlan,
                      executor: Any) -> dict[str, list[float]]:
    """Target values of each study's recommended mixture re-trained at seeds FINAL_SEED + r.

    A study's best trial is the minimum of noisy runs, which favours methods that evaluate more points
    (and the uniform baseline, whose runs are replicates); re-training every recommendation at the same
    fresh seeds compares the mixtures themselves. Results accumulate in OUT/final_eval.json (resumable).
    """
    from mixatlas.errors import MixAtlasError
    from mixatlas.objectives.registry import build_objective
    from mixatlas.search.loop import MixtureJob, evaluate_mixtures
    from mixatlas.search.recommend import recommend
    from mixatlas.search.study import Study

    record = out / "final_eval.json"
    values: dict[str, dict[str, float]] = json.loads(record.read_text()) if record.is_file() else {}
    jobs, objective, target = [], None, None
    for run in studies:
        missing = [r for r in range(plan.final_seeds) if str(r) not in values.get(run.name, {})]
        if not missing:
            continue
        study = Study.open(run.path)
        try:
            mixture, target = recommend(study).mixture, study.target
            objective = objective or build_objective(study.objective_spec)
        finally:
            study.close()
        jobs += [MixtureJob((run.name, r), mixture, out / "final" / run.name / f"seed-{r}", FINAL_SEED + r, r)
                 for r in missing]
    if not jobs:
        console.print("  done already")
    with progress_bar(True, "re-training recommendations", total=len(jobs), transient=True) as bar:
        for job, outcome in evaluate_mixtures(objective, executor, jobs):
            name, r = job.key
            if not outcome.ok:
                raise MixAtlasError(f"final evaluation of {name} at seed {r}: {outcome.error}; rerun")
            values.setdefault(name, {})[str(r)] = target.value(outcome.result.metrics)
            record.write_text(json.dumps(values, indent=1))
            bar(1)
    return {name: [by_seed[str(r)] for r in range(plan.final_seeds)] for name, by_seed in values.items()}


def _baselines(run: DemoStudy, studies: list[DemoStudy]) -> list[DemoStudy]:
    """The studies `run` is compared with: its axis's other methods; for the joint search (no other
    method on its axis) every per-axis baseline."""
    same_axis = [s for s in studies if s.axis == run.axis and s is not run]
    return same_axis or [s for s in studies if s.method != "gp-ucb"]


def _recipe(out: Path, studies: list[DemoStudy], final: dict[str, list[float]]) -> Path:
    """One recipe per gp-ucb study (baselines as `_baselines`); the one with the best re-evaluated mean
    becomes recipe.yaml."""
    from mixatlas.recipe import recipe_from_study

    chosen = out / "recipe.yaml"
    made = False
    searched = [run for run in studies if run.method == "gp-ucb"]
    for run in searched:
        target = out / "recipes" / f"{run.axis}.yaml"
        if target.is_file():
            continue
        recipe_from_study(run.path, baselines=[b.path for b in _baselines(run, studies)]).save(target)
        made = True
    if made or not chosen.is_file():
        best = DEMO_TARGET.best(searched, key=lambda run: float(np.mean(final[run.name])))
        shutil.copyfile(out / "recipes" / f"{best.axis}.yaml", chosen)
    else:
        console.print("  done already")
    return chosen


def _materialize(out: Path, atlas: Any, recipe: Path, plan: DemoPlan) -> Path:
    from mixatlas.recipe import Recipe, materialize

    folder = out / "manifest"
    if (folder / "materialize.json").is_file():
        console.print("  done already")
    else:
        materialize(atlas, Recipe.load(recipe, atlas=atlas), plan.manifest_samples, folder, format="llava",
                    seed=plan.seed)
    return folder / "manifest.jsonl"


def _report(out: Path, studies: list[DemoStudy], atlas: Any, recipe: Path) -> Path:
    from mixatlas.report import build_report

    index = out / "report" / "index.html"
    if index.is_file() and index.stat().st_mtime >= recipe.stat().st_mtime:
        console.print("  done already")
        return index
    return build_report([run.path for run in studies], out / "report", atlas=atlas.dir, recipe=recipe)


def seed_noise_sd(final: dict[str, list[float]]) -> float | None:
    """Pooled sd of the target between fresh seeds of the same mixture (each study's recommendation
    re-trained at every final seed); None with a single final seed."""
    sum_sq, dof = 0.0, 0
    for values in final.values():
        if len(values) > 1:
            values_arr = np.asarray(values)
            sum_sq += float(((values_arr - values_arr.mean()) ** 2).sum())
            dof += len(values) - 1
    return (sum_sq / dof) ** 0.5 if dof else None


def gains(studies: list[DemoStudy], final: dict[str, list[float]],
          noise_sd: float | None) -> list[tuple[str, str, float, float | None]]:
    """(axis, best baseline, gain, sd) of each gp-ucb study over the best baseline re-evaluated alongside.

    Baselines as `_baselines`. gain = how much better the gp-ucb mean is than the baseline's (positive =
    gp-ucb better); sd = noise_sd * sqrt(2 / seeds), each mean being an average of `seeds` runs with the
    pooled seed-to-seed sd.
    """
    rows = []
    for run in studies:
        pool = [b for b in _baselines(run, studies) if b.name in final]
        if run.method != "gp-ucb" or run.name not in final or not pool:
            continue
        mean = {b.name: float(np.mean(final[b.name])) for b in [run, *pool]}
        best = DEMO_TARGET.best(pool, key=lambda b: mean[b.name])
        sd = None if noise_sd is None else noise_sd * (2.0 / len(final[run.name])) ** 0.5
        rows.append((run.axis, best.name, DEMO_TARGET.gain(mean[run.name], mean[best.name]), sd))
    return rows
