"""Every command of the README's pipeline, run once through the real CLI on tiny data, output checked.

One atlas (the session's `pixels_atlas`, made by `mixatlas decompose`), two studies on it and a recipe are
built once per module; each test then runs the README line it covers. Trials use a callable objective with
a known answer (below) so a search costs seconds; the proxy objective has its own small test.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_mixatlas
from mixatlas.atlas import Atlas
from mixatlas.objectives.base import Target
from mixatlas.recipe import Recipe, largest_remainder_counts
from mixatlas.search.study import Study, TrialState
from mixatlas.space import Mixture

TARGET = "0.5*chart-vqa/nll + 0.5*document-ocr/nll"


def readme_metrics(mixture: Mixture) -> dict[str, float]:
    """Known answer: NLLs fall with the share of the task each benchmark tests (vqa, ocr, grounding)."""
    share = dict(zip(mixture.tasks, mixture.weights_kt.sum(axis=0), strict=True))
    return {
        "chart-vqa/nll": 3.0 - 2.0 * share["vqa"],
        "document-ocr/nll": 3.0 - 2.0 * share["ocr"],
        "ui-vqa/nll": 2.0 - share["vqa"] - share["grounding"],
    }


CALLABLE = ["--objective", "callable", "--function", "test_cli_readme:readme_metrics"]


def target_value(mixture: Mixture) -> float:
    metrics = readme_metrics(mixture)
    return 0.5 * metrics["chart-vqa/nll"] + 0.5 * metrics["document-ocr/nll"]


@pytest.fixture(scope="module")
def work(pixels_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `atlas/` (a copy of the session atlas) and the README's two task-space studies."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(pixels_atlas, root / "atlas")
    common = ["--atlas", "atlas", "--space", "task", *CALLABLE, "--target", TARGET, "--minimize"]
    gp = run_mixatlas(
        "search",
        *common,
        "--method",
        "gp-ucb",
        "--budget",
        "4",
        "--study",
        "task-gp.db",
        "--parallel",
        "2",
        cwd=root,
    )
    assert gp.code == 0, gp.err
    regmix = run_mixatlas(
        "search", *common, "--method", "regmix", "--budget", "4", "--study", "task-regmix.db", cwd=root
    )
    assert regmix.code == 0, regmix.err
    return root


def done_trials(path: Path) -> list:
    study = Study.open(path, read_only=True)
    try:
        return study.trials(TrialState.DONE)
    finally:
        study.close()


# ----- decompose, atlas show / assign, synth -------------------------------------------------------------


def test_decompose_and_atlas_show(pixels_atlas: Path) -> None:
    atlas = Atlas.load(pixels_atlas)
    assert atlas.k == 4 and atlas.counts.sum() == 600 and atlas.info.embedder.startswith("pixels")
    show = run_mixatlas("atlas", "show", pixels_atlas, "--json")
    assert show.code == 0, show.err
    shown = json.loads(show.out)
    assert np.array_equal(np.asarray(shown["counts"]), atlas.counts)


def test_synth_then_atlas_assign_maps_a_new_corpus(pixels_atlas: Path, tmp_path: Path) -> None:
    synth = run_mixatlas(
        "synth", tmp_path / "new", "--samples", "40", "--seed", "8", "--eval-per-benchmark", "1"
    )
    assert synth.code == 0, synth.err
    assert len((tmp_path / "new" / "train.jsonl").read_text().splitlines()) == 40
    assign = run_mixatlas(
        "atlas",
        "assign",
        pixels_atlas,
        tmp_path / "new" / "train.jsonl",
        "--out",
        tmp_path / "new-atlas",
        "--workers",
        "0",
    )
    assert assign.code == 0, assign.err
    new, old = Atlas.load(tmp_path / "new-atlas"), Atlas.load(pixels_atlas)
    assert new.counts.sum() == 40 and new.concepts == old.concepts
    assert new.centroids_fingerprint == old.centroids_fingerprint  # same concepts, no re-clustering


def test_decompose_format_source_field_tasks_and_strict(synth_corpus: Path, tmp_path: Path) -> None:
    lines = (synth_corpus / "train.jsonl").read_text().splitlines()[:30]
    corpus = tmp_path / "corpus"
    (corpus / "images").mkdir(parents=True)
    records = [json.loads(line) for line in lines]
    for record in records:
        shutil.copy(synth_corpus / record["image"], corpus / record["image"])
    for record in records:
        record["origin"] = record["meta"]["domain"]
    body = "\n".join(json.dumps(r) for r in records)
    (corpus / "data.txt").write_text(body + "\n")  # an extension the format detection does not know
    args = ["decompose", corpus / "data.txt", "--embedder", "pixels", "--k", "2", "--workers", "0"]
    unknown = run_mixatlas(*args, "--out", tmp_path / "a0")
    assert unknown.code == 2 and "--format" in unknown.err
    run = run_mixatlas(
        *args, "--out", tmp_path / "a1", "--format", "jsonl", "--source-field", "origin", "--tasks", "rules"
    )
    assert run.code == 0, run.err
    table = pq.read_table(tmp_path / "a1" / "samples.parquet").to_pylist()
    assert Counter(row["source"] for row in table) == Counter(r["meta"]["domain"] for r in records)
    assert {row["task_rule"] for row in table} != {""}  # typed by rules
    # one malformed line: counted as a reject by default, a one-line error naming the line with --strict
    (corpus / "data.txt").write_text(body + "\n{broken\n")
    lenient = run_mixatlas(*args, "--out", tmp_path / "a2", "--format", "jsonl")
    assert lenient.code == 0 and Atlas.load(tmp_path / "a2").counts.sum() == 30
    strict = run_mixatlas(*args, "--out", tmp_path / "a3", "--format", "jsonl", "--strict")
    assert strict.code == 2 and "data.txt:31" in strict.err and "Traceback" not in strict.err


# ----- search: studies, spaces, objectives, executor options ---------------------------------------------


def test_search_on_an_atlas_with_gp_ucb_and_regmix(work: Path) -> None:
    for name, method in (("task-gp.db", "gp-ucb"), ("task-regmix.db", "regmix")):
        study = Study.open(work / name, read_only=True)
        assert (study.method, study.budget, study.space.mode, study.target.minimize) == (
            method,
            4,
            "task",
            True,
        )
        trials = study.trials(TrialState.DONE)
        assert len(trials) == 4
        for trial in trials:  # each value is the known answer of the mixture the trial trained
            assert trial.value == pytest.approx(target_value(trial.mixture))
        study.close()
    show = run_mixatlas("study", "show", work / "task-gp.db", "--csv", work / "trials.csv")
    assert show.code == 0, show.err
    assert "4/4 done" in show.err
    with open(work / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows] == ["done"] * 4
    assert {float(row["value"]) for row in rows} == {t.value for t in done_trials(work / "task-gp.db")}


def test_rerun_resumes_and_share_from_reuses_finished_runs(work: Path) -> None:
    common = ["--atlas", "atlas", "--space", "task", *CALLABLE, "--minimize"]
    again = run_mixatlas(
        "search",
        *common,
        "--target",
        TARGET,
        "--method",
        "gp-ucb",
        "--budget",
        "4",
        "--study",
        "task-gp.db",
        cwd=work,
    )
    assert again.code == 0, again.err
    assert len(done_trials(work / "task-gp.db")) == 4  # nothing rerun: the study was complete
    shared = run_mixatlas(
        "search",
        *common,
        "--target",
        "ui-vqa/nll",
        "--budget",
        "5",
        "--method",
        "random",
        "--study",
        "task-ui.db",
        "--share-from",
        "task-gp.db",
        cwd=work,
    )
    assert shared.code == 0, shared.err
    trials = done_trials(work / "task-ui.db")
    assert len(trials) == 5 and sum(t.worker.startswith("shared:") for t in trials) == 4
    for trial in trials:  # re-scored on the new target
        assert trial.value == pytest.approx(readme_metrics(trial.mixture)["ui-vqa/nll"])


@pytest.mark.parametrize(("space", "within"), [("concept", "uniform"), ("factored", None), ("joint", None)])
def test_search_spaces_within_and_epoch_cap(work: Path, space: str, within: str | None) -> None:
    atlas = Atlas.load(work / "atlas")
    options = ["--within", within] if within else []
    study_path = work / f"{space}.db"
    run = run_mixatlas(
        "search",
        "--atlas",
        "atlas",
        "--space",
        space,
        *options,
        "--max-epochs",
        "1",
        "--planned-samples",
        "500",
        *CALLABLE,
        "--target",
        TARGET,
        "--minimize",
        "--method",
        "random",
        "--budget",
        "2",
        "--study",
        study_path.name,
        cwd=work,
    )
    assert run.code == 0, run.err
    study = Study.open(study_path, read_only=True)
    assert study.space.mode == space and study.space.planned_samples == 500 and study.space.max_epochs == 1
    if within:
        assert study.space.settings()["within"] == within
    for trial in study.trials(TrialState.DONE):
        w = trial.mixture.weights_kt
        assert w.sum() == pytest.approx(1.0, abs=1e-9)
        assert np.all(w * 500 <= atlas.counts * 1 + 1e-9)  # the epoch cap holds for every trial
    study.close()


TRAINER = """
import json, sys, time
from pathlib import Path
mixture_json, trial_dir, trial_id, seed, flags = sys.argv[1:]
weights = json.loads(Path(mixture_json).read_text())
flag = Path(flags) / trial_id
if trial_id == "2" and not flag.exists():  # trial 2 hangs on its first attempt
    flag.write_text("hung")
    time.sleep(60)
metrics = {"loss": 1.0 + int(trial_id), "seed": int(seed)}
Path(trial_dir, "metrics.json").write_text(json.dumps({"metrics": metrics, "curve": [[1, 2.0]]}))
"""


def test_command_objective_with_timeout_retries_and_shared_seeds(work: Path, tmp_path: Path) -> None:
    (tmp_path / "trainer.py").write_text(TRAINER)
    (tmp_path / "flags").mkdir()
    command = (
        f"{sys.executable} {tmp_path / 'trainer.py'} {{mixture_json}} {{trial_dir}} {{trial_id}} {{seed}} "
        f"{tmp_path / 'flags'}"
    )
    run = run_mixatlas(
        "search",
        "--atlas",
        "atlas",
        "--space",
        "task",
        "--objective",
        "command",
        "--command",
        command,
        "--target",
        "loss",
        "--minimize",
        "--method",
        "random",
        "--budget",
        "3",
        "--seed",
        "5",
        "--trial-seeds",
        "shared",
        "--timeout",
        "4",
        "--retries",
        "1",
        "--parallel",
        "2",
        "--study",
        tmp_path / "cmd.db",
        cwd=work,
    )
    assert run.code == 0, run.err
    study = Study.open(tmp_path / "cmd.db", read_only=True)
    trials = {t.id: t for t in study.trials()}
    # trial 2 hung: failed with the timeout as its reason, then retried once as trial 4 with the same mixture
    assert trials[2].state == TrialState.FAILED and trials[2].error == "timed out after 4 s"
    assert (trials[4].retry_of, trials[4].attempts, trials[4].state) == (2, 2, TrialState.DONE)
    assert np.array_equal(trials[4].params, trials[2].params) and len(trials) == 4
    done = [t for t in trials.values() if t.state == TrialState.DONE]
    assert {t.metrics["seed"] for t in done} == {5}  # shared: every trial at the study seed
    assert {t.id: t.value for t in done} == {1: 2.0, 3: 4.0, 4: 5.0}
    study.close()


def test_search_on_a_pool_picks_only_pool_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(3), size=20)
    loss = ((weights - [0.7, 0.2, 0.1]) ** 2).sum(axis=1)
    with open(tmp_path / "runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["w_a", "w_b", "w_c", "loss"])
        writer.writerows([[*w, value] for w, value in zip(weights, loss, strict=True)])
    run = run_mixatlas(
        "search",
        "--pool",
        "runs.csv",
        "--weight-cols",
        "w_",
        "--target",
        "loss",
        "--minimize",
        "--method",
        "random",
        "--budget",
        "20",
        "--parallel",
        "4",
        "--study",
        "pool.db",
        cwd=tmp_path,
    )
    assert run.code == 0, run.err
    trials = done_trials(tmp_path / "pool.db")
    rows = {tuple(np.round(w, 9)): value for w, value in zip(weights, loss, strict=True)}
    assert len(trials) == 20
    for trial in trials:  # every trial is a pool row with its recorded loss
        assert trial.value == pytest.approx(rows[tuple(np.round(trial.params, 9))])
    # the whole pool as budget: the recommendation is the best row
    assert f"{loss.min():.4g}" in run.err


def test_search_with_the_proxy_objective_then_proxy_train_and_steps_to_loss(
    work: Path, tmp_path: Path
) -> None:
    from mixatlas.objectives.proxy import ProxyConfig

    config = tmp_path / "proxy.yaml"
    ProxyConfig(
        steps=4,
        batch_size=4,
        warmup_steps=1,
        eval_samples=2,
        eval_batch_size=4,
        eval_generate=False,
        eval_benchmarks=["chart-vqa", "document-ocr"],
    ).to_yaml(config)
    # README: `search --config examples/search.yaml --budget N` (YAML config, flags override it) with the
    # proxy objective; the flags point it at this atlas and config and shrink it to one trial
    examples = Path(__file__).resolve().parent.parent / "examples" / "search.yaml"
    run = run_mixatlas(
        "search",
        "--config",
        examples,
        "--atlas",
        "atlas",
        "--objective",
        "proxy",
        "--proxy-config",
        config,
        "--planned-samples",
        "1200",
        "--budget",
        "1",
        "--study",
        tmp_path / "proxy.db",
        cwd=work,
    )
    assert run.code == 0, run.err
    study = Study.open(tmp_path / "proxy.db", read_only=True)
    # from the YAML: method, space, target, direction, shared seeds; from the flags: budget, epoch cap
    assert (study.method, study.space.mode, study.target.spec, study.target.minimize) == (
        "gp-ucb",
        "task",
        Target.parse(TARGET).spec,
        True,
    )
    assert (study.budget, study.space.planned_samples, study.meta["trial_seeds"]) == (1, 1200, "shared")
    study.close()
    (trial,) = done_trials(tmp_path / "proxy.db")
    metrics = json.loads(Path(trial.trial_dir, "metrics.json").read_text())["metrics"]
    assert trial.value == pytest.approx(0.5 * metrics["chart-vqa/nll"] + 0.5 * metrics["document-ocr/nll"])
    # proxy train on a mixture file (the trial's own mixture) and on 'uniform', then steps-to-loss
    trial.mixture.save(tmp_path / "mix.json")
    for name, mixture in (("run1", tmp_path / "mix.json"), ("run0", "uniform")):
        train = run_mixatlas(
            "proxy",
            "train",
            "--atlas",
            work / "atlas",
            "--mixture",
            mixture,
            "--config",
            config,
            "--seed",
            "0",
            "--out",
            tmp_path / name,
        )
        assert train.code == 0, train.err
    saved = Mixture.load(tmp_path / "run1" / "mixture.json")
    assert np.allclose(saved.weights_kt, trial.mixture.weights_kt)
    assert len((tmp_path / "run0" / "train_log.jsonl").read_text().splitlines()) >= 4
    steps = run_mixatlas(
        "analyze",
        "steps-to-loss",
        tmp_path / "run1",
        "--baseline",
        tmp_path / "run0",
        "--json",
        tmp_path / "steps.json",
    )
    assert steps.code == 0, steps.err
    (row,) = json.loads((tmp_path / "steps.json").read_text())
    assert row["baseline_steps"] == 4


# ----- recipe, materialize, report -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe_path(work: Path) -> Path:
    run = run_mixatlas(
        "recipe", "task-gp.db", "--out", "recipe.yaml", "--baseline", "task-regmix.db", cwd=work
    )
    assert run.code == 0, run.err
    return work / "recipe.yaml"


def test_recipe_show_and_apply(work: Path, recipe_path: Path, tmp_path: Path) -> None:
    atlas = Atlas.load(work / "atlas")
    recipe = Recipe.load(recipe_path, atlas=atlas)
    assert recipe.provenance["method"] == "gp-ucb" and {b.method for b in recipe.baselines} >= {"regmix"}
    assert recipe.weights_kt.sum() == pytest.approx(1.0)
    show = run_mixatlas("recipe", "show", recipe_path)
    assert show.code == 0, show.err
    assert "gp-ucb" in show.out + show.err and "regmix" in show.out + show.err
    synth = run_mixatlas(
        "synth", tmp_path / "new", "--samples", "40", "--seed", "9", "--eval-per-benchmark", "1"
    )
    assign = run_mixatlas(
        "atlas",
        "assign",
        work / "atlas",
        tmp_path / "new" / "train.jsonl",
        "--out",
        tmp_path / "new-atlas",
        "--workers",
        "0",
    )
    assert synth.code == 0 and assign.code == 0, assign.err
    apply = run_mixatlas(
        "recipe",
        "apply",
        recipe_path,
        "--atlas",
        tmp_path / "new-atlas",
        "--out",
        tmp_path / "recipe-new.yaml",
    )
    assert apply.code == 0, apply.err
    applied = Recipe.load(tmp_path / "recipe-new.yaml", atlas=Atlas.load(tmp_path / "new-atlas"))
    # the same cells (shared centroids); empty cells of the 40-sample corpus give their weight away, the
    # others keep at least their recipe weight
    new_counts = Atlas.load(tmp_path / "new-atlas").counts
    assert (
        applied.weights_kt.sum() == pytest.approx(1.0) and applied.mixture.concepts == recipe.mixture.concepts
    )
    assert np.all(applied.weights_kt[new_counts == 0] == 0)
    assert np.all(applied.weights_kt[new_counts > 0] >= recipe.weights_kt[new_counts > 0] - 1e-12)


@pytest.mark.parametrize("fmt", ["llava", "wds", "parquet"])
def test_materialize_formats_counts_seed_and_overwrite(
    work: Path, recipe_path: Path, tmp_path: Path, fmt: str
) -> None:
    atlas = Atlas.load(work / "atlas")
    recipe = Recipe.load(recipe_path, atlas=atlas)
    args = [
        "materialize",
        "--atlas",
        work / "atlas",
        "--recipe",
        recipe_path,
        "--samples",
        "300",
        "--format",
        fmt,
        "--max-epochs",
        "20",
    ]
    run = run_mixatlas(*args, "--out", tmp_path / "mix", "--seed", "1")
    assert run.code == 0, run.err
    if fmt == "llava":
        rows = [json.loads(line) for line in (tmp_path / "mix" / "manifest.jsonl").read_text().splitlines()]
    elif fmt == "parquet":
        rows = pq.read_table(sorted((tmp_path / "mix").glob("*.parquet"))).to_pylist()
    else:
        rows = []
        for shard in sorted((tmp_path / "mix").glob("*.tar")):
            with tarfile.open(shard) as tar:
                rows += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(rows) == 300
    # exact per-cell counts: the largest-remainder rounding of the recipe's weights
    table = pq.read_table(work / "atlas" / "samples.parquet").to_pylist()
    cell = {row["id"]: (row["concept"], row["task"]) for row in table}
    got = Counter(cell[row["id"]] for row in rows)
    need = largest_remainder_counts(recipe.weights_kt, 300)
    tasks = list(atlas.tasks)
    for (concept, task), count in got.items():
        assert count == need[int(concept), tasks.index(task)]
    assert sum(got.values()) == need.sum()
    # an existing output is refused without --overwrite; a new seed reshuffles the same counts
    refused = run_mixatlas(*args, "--out", tmp_path / "mix", "--seed", "2")
    assert refused.code == 2 and "--overwrite" in refused.err
    replaced = run_mixatlas(*args, "--out", tmp_path / "mix", "--seed", "2", "--overwrite")
    assert replaced.code == 0, replaced.err
    if fmt == "llava":
        again = [json.loads(line) for line in (tmp_path / "mix" / "manifest.jsonl").read_text().splitlines()]
        assert Counter(cell[r["id"]] for r in again) == got  # the same exact cell counts
        assert [r["id"] for r in again] != [r["id"] for r in rows]  # another draw and order


def test_materialize_hf_probabilities(work: Path, recipe_path: Path, tmp_path: Path) -> None:
    run = run_mixatlas(
        "materialize",
        "--atlas",
        work / "atlas",
        "--recipe",
        recipe_path,
        "--out",
        tmp_path / "hf",
        "--hf-probabilities",
    )
    assert run.code == 0, run.err
    probabilities = json.loads((tmp_path / "hf" / "hf_probabilities.json").read_text())
    # independent: P(source) = sum over cells of w_cell x (rows of the source in the cell / rows in the cell)
    recipe = Recipe.load(recipe_path, atlas=Atlas.load(work / "atlas"))
    tasks = list(Atlas.load(work / "atlas").tasks)
    rows = pq.read_table(work / "atlas" / "samples.parquet").to_pylist()
    in_cell = Counter((int(r["concept"]), r["task"]) for r in rows)
    expected: Counter = Counter()
    for r in rows:
        c, t = int(r["concept"]), r["task"]
        expected[r["source"]] += recipe.weights_kt[c, tasks.index(t)] / in_cell[c, t]
    assert set(probabilities) == set(expected)
    for source, p in probabilities.items():
        assert p == pytest.approx(expected[source])


def test_report_of_two_studies_with_atlas_and_recipe(work: Path, recipe_path: Path) -> None:
    run = run_mixatlas(
        "report",
        "task-gp.db",
        "task-regmix.db",
        "--out",
        "report",
        "--atlas",
        "atlas",
        "--recipe",
        "recipe.yaml",
        cwd=work,
    )
    assert run.code == 0, run.err
    html = (work / "report" / "index.html").read_text()
    assert "gp-ucb" in html and "regmix" in html and "document-ocr/nll" in html
    best = min(t.value for t in done_trials(work / "task-gp.db"))
    assert f"{best:.3f}" in html or f"{best:.4g}" in html


# ----- bench ---------------------------------------------------------------------------------------------


def test_bench_synthetic_tiny(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.json"
    run = run_mixatlas(
        "bench",
        "synthetic",
        "--space",
        "task",
        "--budget",
        "4",
        "--seeds",
        "2",
        "--methods",
        "random,uniform,natural",
        "--json",
        out,
    )
    assert run.code == 0, run.err
    methods = json.loads(out.read_text())["methods"]
    assert set(methods) == {"random", "uniform", "natural"}
    for name in ("uniform", "natural"):  # single-point references: the same regret on every seed
        per_seed = methods[name]["regret_per_seed"]
        assert len(per_seed) == 2 and per_seed[0] == per_seed[1] > 0
    assert all(r >= 0 for r in methods["random"]["regret_per_seed"])


def test_bench_public_tiny(tmp_path: Path) -> None:
    from mixatlas.objectives.public_runs import default_root, public_pool

    if not (default_root() / "autoscale").exists():
        pytest.skip("public runs not available")
    out = tmp_path / "public.json"
    args = ["--problem", "autoscale", "--seeds", "2", "--methods", "random,uniform", "--json", out]
    run = run_mixatlas("bench", "public", *args)
    assert run.code == 0, run.err
    result = json.loads(out.read_text())["problems"]["autoscale"]
    assert result["budget"] == 4  # 30% of the 15-row pool
    # uniform evaluates pool row 0 (the uniform 1/7 mixture): its regret and percentile are known
    loss = public_pool("autoscale").metric("valid_avg")
    uniform = result["methods"]["uniform"]
    assert uniform["regret_mean"] == pytest.approx(loss[0] - loss.min())
    assert uniform["percentile_mean"] == pytest.approx(100 * np.mean(loss < loss[0]))
    assert "autoscale" in run.err and "15/4" in run.err


def test_bench_overhead_tiny(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    run = run_mixatlas("bench", "overhead", "--trials", "10", "--methods", "random,regmix", "--json", out)
    assert run.code == 0, run.err
    data = json.loads(out.read_text())
    assert (data["n_done"], data["dim"], set(data["methods"])) == (10, 50, {"random", "regmix"})
    for timings in data["methods"].values():
        assert 0 < timings["ask_n1_s"] < 60 and 0 < timings["ask_n4_s"] < 60


# ----- commands added to the README by other stages (audit/export -> map, k auto, fidelities) -------------


def test_audit_export_then_decompose_with_the_map(
    synth_corpus: Path, pixels_atlas: Path, tmp_path: Path
) -> None:
    fix = tmp_path / "fix.yaml"
    audit = run_mixatlas("atlas", "audit", pixels_atlas, "--export", fix)
    assert audit.code == 0, audit.err
    # the synthetic corpus's one source ("train") holds all five tasks: exported as a comment, left to rules
    assert re.search(r"^  # train: \w+  # \d+% of 600, mixed: left to rules$", fix.read_text(), re.M)
    # the documented fix: edit the map (here: type every sample of "train" as OCR), rebuild with it
    fix.write_text(fix.read_text().replace("sources:", "sources:\n  train: ocr"))
    rebuilt = run_mixatlas(
        "decompose",
        synth_corpus / "train.jsonl",
        "--out",
        tmp_path / "A2",
        "--tasks",
        f"map:{fix}",
        "--k",
        "4",
        "--workers",
        "0",
    )
    assert rebuilt.code == 0, rebuilt.err
    rows = pq.read_table(tmp_path / "A2" / "samples.parquet").to_pylist()
    assert len(rows) == 600
    assert {(row["task"], row["task_rule"]) for row in rows} == {("ocr", "map:source:train")}


def test_decompose_k_auto_picks_k_by_silhouette(synth_corpus: Path, tmp_path: Path) -> None:
    run = run_mixatlas(
        "decompose", synth_corpus / "train.jsonl", "--out", tmp_path / "A", "--k", "auto", "--workers", "0"
    )
    assert run.code == 0, run.err
    atlas = Atlas.load(tmp_path / "A")
    assert 2 <= atlas.k <= 16 and atlas.counts.sum() == 600
    assert list(atlas.concepts) == [f"c{i}" for i in range(atlas.k)]  # default names c0..c{k-1}


def test_analyze_fidelities_on_a_known_ordering(tmp_path: Path) -> None:
    # 'small' ranks the 8 mixtures exactly as 'large' does, 'reversed' exactly the other way round
    rows = []
    for i in range(8):
        a = (i + 1) / 10
        large = 1 + (a - 0.42) ** 2
        rows += [
            [a, 1 - a, "large", large],
            [a, 1 - a, "small", 2 * large + 1],
            [a, 1 - a, "reversed", 5 - large],
        ]
    with open(tmp_path / "f.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["w_a", "w_b", "fidelity", "loss"])
        writer.writerows(rows)
    args = [
        "--weight-cols",
        "w_",
        "--fidelity-col",
        "fidelity",
        "--target",
        "loss",
        "--target-fidelity",
        "large",
    ]
    run = run_mixatlas(
        "analyze", "fidelities", tmp_path / "f.csv", *args, "--minimize", "--json", tmp_path / "o.json"
    )
    assert run.code == 0, run.err
    result = {row["fidelity"]: row for row in json.loads((tmp_path / "o.json").read_text())["rows"]}
    assert result["small"]["spearman"] == pytest.approx(1.0) and result["small"]["kendall"] == pytest.approx(
        1.0
    )
    assert result["reversed"]["spearman"] == pytest.approx(-1.0)
    assert result["small"]["best_rank_at_target"] == 1 and result["reversed"]["best_rank_at_target"] == 8
