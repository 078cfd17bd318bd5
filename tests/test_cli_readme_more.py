"""README commands and options `test_cli_readme.py` does not run, each once through the real CLI on tiny data.

Searches use a callable objective with a known answer (the task shares below) or the synthetic problems,
whose loss is known in closed form; benches run at a budget of a few evaluations; every output is checked
against what the command must produce, not only for its shape.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import run_mixatlas
from mixatlas.atlas import Atlas
from mixatlas.search.study import Study, TrialState
from mixatlas.space import Mixture

REPO = Path(__file__).resolve().parent.parent
TARGET = "0.5*chart-vqa/nll + 0.5*document-ocr/nll"


def shares_metrics(mixture: Mixture) -> dict[str, float]:
    """Known answer: each NLL falls with the share of the task its benchmark tests."""
    share = dict(zip(mixture.tasks, mixture.weights_kt.sum(axis=0), strict=True))
    return {"chart-vqa/nll": 3.0 - 2.0 * share["vqa"], "document-ocr/nll": 3.0 - 2.0 * share["ocr"]}


CALLABLE = ["--objective", "callable", "--function", "test_cli_readme_more:shares_metrics"]


@pytest.fixture(scope="module")
def work(pixels_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme_more")
    shutil.copytree(pixels_atlas, root / "atlas")
    return root


def study_trials(path: Path) -> tuple[Study, list]:
    study = Study.open(path, read_only=True)
    return study, study.trials(TrialState.DONE)


# ----- search: the reference methods, mixing-law, --within natural ---------------------------------------


@pytest.mark.parametrize(("method", "budget"), [("uniform", 1), ("natural", 1), ("mixing-law", 4)])
def test_search_reference_methods_and_mixing_law_within_natural(work: Path, method: str, budget: int) -> None:
    study_path = work / f"{method}.db"
    run = run_mixatlas("search", "--atlas", "atlas", "--space", "task", "--within", "natural", *CALLABLE,
                       "--target", TARGET, "--minimize", "--method", method, "--budget", str(budget),
                       "--study", study_path.name, cwd=work)
    assert run.code == 0, run.err
    counts = Atlas.load(work / "atlas").counts.astype(float)
    study, trials = study_trials(study_path)
    assert (study.method, study.space.settings()["within"], len(trials)) == (method, "natural", budget)
    study.close()
    for trial in trials:
        w = trial.mixture.weights_kt
        known = shares_metrics(trial.mixture)
        assert trial.value == pytest.approx(0.5 * known["chart-vqa/nll"] + 0.5 * known["document-ocr/nll"])
        # within natural: inside each task the concepts split as the atlas counts do
        used = w.sum(axis=0) > 1e-12
        assert np.allclose(w[:, used] / w[:, used].sum(axis=0), counts[:, used] / counts[:, used].sum(axis=0))
    task_share = trials[0].mixture.weights_kt.sum(axis=0)
    if method == "uniform":  # the single point: every task 1/5
        assert np.allclose(task_share, 0.2)
    elif method == "natural":  # the single point: the atlas's own task shares
        assert np.allclose(task_share, counts.sum(axis=0) / counts.sum())
    else:  # the target is 3 - vqa - ocr: the fitted law's recommendation puts (almost) all weight there
        recommended = {name: float(value) for name, value in re.findall(r"│ (\w+) │ ([0-9.]+) │", run.err)}
        assert recommended["vqa"] + recommended["ocr"] > 0.95, run.err


# ----- search: synthetic problems, tracking, lmms-eval model options -------------------------------------


@pytest.mark.parametrize("family", ["joint", "concept", "factored"])
def test_search_synthetic_families_score_the_closed_form_loss(tmp_path: Path, family: str) -> None:
    from mixatlas.objectives.synthetic import make_synthetic

    run = run_mixatlas("search", "--synthetic", family, "--method", "random", "--budget", "2", "--seed", "3",
                       "--study", tmp_path / "s.db")
    assert run.code == 0, run.err
    study, trials = study_trials(tmp_path / "s.db")
    assert study.space.mode == family and len(trials) == 2
    study.close()
    space, objective = make_synthetic(family, seed=3)  # the family member the study's seed picks
    for trial in trials:  # each trial's noiseless loss is the closed form at its parameters
        known = float(objective.loss_of_params(np.atleast_2d(trial.params))[0])
        assert trial.metrics["loss_noiseless"] == pytest.approx(known)
        assert trial.value == trial.metrics["loss"] and abs(trial.value - known) < 5 * objective.noise + 1e-12
        assert np.allclose(space.to_mixture(trial.params).weights_kt, trial.mixture.weights_kt)


def test_search_track_tensorboard_logs_every_trial(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_mixatlas("search", "--synthetic", "task", "--method", "random", "--budget", "2", "--study",
                       "s.db", "--track", "tensorboard", "--track-uri", "runs/tb", cwd=tmp_path)
    assert run.code == 0, run.err
    study, trials = study_trials(tmp_path / "s.db")
    study.close()
    runs = sorted(p.name for p in (tmp_path / "runs" / "tb" / "s").iterdir())
    assert runs == [f"trial-{t.id:05d}" for t in trials]
    for trial in trials:
        events = EventAccumulator(str(tmp_path / "runs" / "tb" / "s" / f"trial-{trial.id:05d}"))
        events.Reload()
        assert events.Scalars("target")[-1].value == pytest.approx(trial.value, rel=1e-6)


TRAINER = """
import json, sys, pathlib
mixture, trial = json.load(open(sys.argv[1])), pathlib.Path(sys.argv[2])
(trial / "checkpoint").mkdir(parents=True, exist_ok=True)
ocr = sum(row[mixture["tasks"].index("ocr")] for row in mixture["weights"])
(trial / "checkpoint" / "weights.json").write_text(json.dumps({"ocr": ocr}))
"""
# Stands in for lmms-eval: same flags and results layout; scores the checkpoint named in --model_args and
# records the --model / --model_args it was given.
EVALUATOR = """
import argparse, json, pathlib
parser = argparse.ArgumentParser()
for flag in ("--model", "--model_args", "--tasks", "--batch_size", "--output_path"):
    parser.add_argument(flag, required=True)
args = parser.parse_args()
options = dict(item.split("=", 1) for item in args.model_args.split(","))
ocr = json.loads((pathlib.Path(options["pretrained"]) / "weights.json").read_text())["ocr"]
results = {t: {"alias": t, "anls,none": ocr} for t in args.tasks.split(",")}
out = pathlib.Path(args.output_path) / "checkpoint"
out.mkdir(parents=True, exist_ok=True)
(out / "20250101_120000_results.json").write_text(json.dumps({"results": results, "config": {}}))
pathlib.Path(args.output_path, "argv.json").write_text(json.dumps({"model": args.model, **options}))
"""


def test_search_lmms_eval_with_model_and_model_args(work: Path, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAINER)
    (tmp_path / "fake_lmms_eval.py").write_text(EVALUATOR)
    python = shlex.quote(sys.executable)
    run = run_mixatlas(
        "search", "--atlas", work / "atlas", "--space", "task", "--objective", "lmms-eval",
        "--command", f"{python} {tmp_path / 'train.py'} {{mixture_json}} {{trial_dir}} {{seed}}",
        "--lmms-tasks", "chartqa,docvqa_val", "--lmms-model", "llava_onevision",
        "--lmms-model-args", "pretrained={trial_dir}/checkpoint,conv_template=qwen_1_5",
        "--lmms-eval-command", f"{python} {tmp_path / 'fake_lmms_eval.py'}",
        "--target", "0.5*chartqa/anls + 0.5*docvqa_val/anls", "--maximize", "--method", "random",
        "--budget", "2", "--study", tmp_path / "l.db")
    assert run.code == 0, run.err
    study, trials = study_trials(tmp_path / "l.db")
    study.close()
    assert len(trials) == 2
    for trial in trials:
        given = json.loads((Path(trial.trial_dir) / "lmms_eval" / "argv.json").read_text())
        assert given == {"model": "llava_onevision", "pretrained": f"{trial.trial_dir}/checkpoint",
                         "conv_template": "qwen_1_5"}  # {trial_dir} expanded, the other options kept
        ocr = trial.mixture.weights_kt.sum(axis=0)[list(trial.mixture.tasks).index("ocr")]
        assert trial.value == pytest.approx(ocr)


# ----- proxy train --preset tiny ---------------------------------------------------------------------------


def test_proxy_train_preset_tiny_readme_form(work: Path, synth_corpus: Path, tmp_path: Path) -> None:
    # the README line with its 300 steps cut to 2; a small eval (2 samples a benchmark, short answers) from
    # a config the flags override
    (tmp_path / "eval.yaml").write_text("eval_samples: 2\neval_max_new_tokens: 4\nsteps: 50\n")
    run = run_mixatlas("proxy", "train", "--atlas", work / "atlas", "--mixture", "uniform",
                       "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--seed", "0",
                       "--out", tmp_path / "run0", "--config", tmp_path / "eval.yaml")
    assert run.code == 0, run.err
    saved = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    benchmarks = sorted(p.stem for p in (synth_corpus / "eval").glob("*.jsonl"))  # beside the corpus file
    assert len(benchmarks) == 8
    assert sorted({key.split("/")[0] for key in saved["metrics"]} - {"avg"}) == benchmarks
    assert saved["metrics"]["avg/nll"] == pytest.approx(np.mean([saved["metrics"][f"{b}/nll"]
                                                                 for b in benchmarks]))
    assert [step for step, _ in saved["curve"]] == [1.0, 2.0]
    assert {f"{b}/em" for b in benchmarks} <= set(saved["metrics"])  # greedy decoding ran (eval_generate)
    config = (tmp_path / "run0" / "proxy.yaml").read_text()
    assert "preset: tiny" in config and "steps: 2" in config and "pack_len: auto" in config


def save_tiny_vision_and_lm(root: Path) -> tuple[Path, Path]:
    """A randomly initialised 1-layer CLIP vision tower and Qwen2 LM (with a BPE tokenizer) saved under
    `root`: what `--vision` / `--lm` load, as they would load hub ids, without a download."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM

    from mixatlas.objectives.proxy.tokenizer import train_bpe

    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision = CLIPVisionConfig(**layers, image_size=32, patch_size=16)
    CLIPVisionModel(vision).save_pretrained(root / "vision")
    lm = Qwen2Config(vocab_size=400, num_key_value_heads=1, **layers)
    Qwen2ForCausalLM(lm).save_pretrained(root / "lm")
    train_bpe(["a plain text tokenizer for the lm"] * 10, 300).save_pretrained(root / "lm")
    return root / "vision", root / "lm"


def test_proxy_train_vision_lm_and_bf16_readme_form(work: Path, tmp_path: Path) -> None:
    # `proxy train --mixture mix.json --vision ... --lm ... --bf16`: local folders for the hub ids; bf16
    # autocast runs on the CPU too, so its run must differ from the float32 one, slightly
    vision, lm = save_tiny_vision_and_lm(tmp_path)
    atlas = Atlas.load(work / "atlas")
    counts = atlas.counts.astype(float) + 1.0
    Mixture(tuple(atlas.concepts), tuple(atlas.tasks), counts / counts.sum()).save(tmp_path / "mix.json")
    (tmp_path / "eval.yaml").write_text("eval_samples: 2\neval_generate: false\nwarmup_steps: 1\n")
    args = ["proxy", "train", "--atlas", work / "atlas", "--mixture", tmp_path / "mix.json", "--vision",
            vision, "--lm", lm, "--steps", "2", "--batch-size", "4", "--seed", "0",
            "--config", tmp_path / "eval.yaml"]
    half_run = run_mixatlas(*args, "--bf16", "--out", tmp_path / "run1")
    full_run = run_mixatlas(*args, "--out", tmp_path / "run0")
    runs = {}
    for name, run, bf16 in (("run1", half_run, "true"), ("run0", full_run, "false")):
        assert run.code == 0, run.err
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        config = (tmp_path / name / "proxy.yaml").read_text()
        assert "preset: custom" in config and f"vision: {vision}" in config and f"lm: {lm}" in config
        assert f"bf16: {bf16}" in config
        assert np.allclose(Mixture.load(tmp_path / name / "mixture.json").weights_kt, counts / counts.sum())
    half, full = ([loss for _, loss in runs[name]["curve"]] for name in ("run1", "run0"))
    assert len(half) == len(full) == 2 and half != full  # bf16 autocast changed the arithmetic ...
    assert half == pytest.approx(full, rel=0.05)  # ... not the model
    assert np.isfinite(runs["run1"]["metrics"]["avg/nll"])


# ----- bench synthetic --space joint, bench public (the README form) ------------------------------------


def test_bench_synthetic_joint_gp_ucb_and_regmix(tmp_path: Path) -> None:
    from mixatlas.search.benchmark import synthetic_problem

    out = tmp_path / "joint.json"
    run = run_mixatlas("bench", "synthetic", "--space", "joint", "--budget", "3", "--seeds", "1",
                       "--methods", "gp-ucb,regmix,uniform", "--json", out)
    assert run.code == 0, run.err
    result = json.loads(out.read_text())
    assert (result["problem"], result["budget"], set(result["methods"])) == (
        "synthetic-joint", 3, {"gp-ucb", "regmix", "uniform"})
    problem = synthetic_problem("joint", seed=0)  # the bench's default --problem-seed
    uniform = problem.space.uniform_params()
    expected = float(problem.regret(uniform)[0])
    assert result["methods"]["uniform"]["regret_per_seed"] == [pytest.approx(expected)]
    assert result["methods"]["uniform"]["percentile_mean"] == pytest.approx(problem.percentile(uniform))
    for method in ("gp-ucb", "regmix"):
        row = result["methods"][method]
        curve = row["best_so_far"]
        assert len(curve) == 3 and all(b <= a + 1e-12 for a, b in itertools.pairwise(curve))
        assert row["best_evaluated_regret_mean"] == pytest.approx(curve[-1])
        assert 0 <= row["regret_mean"] < result["methods"]["uniform"]["regret_mean"] + 1.0


# The README's table (uniform and natural columns, which are single points, so one seed reproduces them).
PUBLIC_TABLE = {"3mix-410M": (32, 10, 21.9), "5mix-70M": (26, 8, 30.8), "5mix-160M": (26, 8, 30.8),
                "5mix-305M": (26, 8, 30.8), "5mix-410M": (26, 8, 34.6), "redpajama-70M": (40, 12, 55.0),
                "redpajama-160M": (20, 6, 60.0), "redpajama-305M": (20, 6, 65.0),
                "redpajama-410M": (20, 6, 65.0), "autoscale": (15, 4, 46.7)}
PUBLIC_SKIPPED = {"2mix-70M", "2mix-160M", "3mix-70M", "3mix-160M", "5mix-1B", "redpajama-1B", "ct-70M"}


def test_bench_public_readme_form_reproduces_the_reference_columns(tmp_path: Path) -> None:
    from mixatlas.objectives.public_runs import default_root

    if not default_root().exists():
        pytest.skip(f"public runs not available at {default_root()}")
    out = tmp_path / "search_public.json"
    run = run_mixatlas("bench", "public", "--seeds", "1", "--methods", "uniform,natural", "--json", out)
    assert run.code == 0, run.err
    result = json.loads(out.read_text())
    assert set(result["problems"]) == set(PUBLIC_TABLE) and set(result["skipped"]) == PUBLIC_SKIPPED
    for name, (rows, budget, percentile) in PUBLIC_TABLE.items():
        problem = result["problems"][name]
        assert problem["budget"] == budget and f"{rows}/{budget}" in run.err
        for method in ("uniform", "natural"):
            assert round(problem["methods"][method]["percentile_mean"], 1) == percentile


# ----- decompose: a JSON-array corpus, image safety limits ----------------------------------------------


def small_corpus(synth_corpus: Path, root: Path, n: int) -> list[dict]:
    """The first `n` synthetic records with their images copied under `root/images/`."""
    records = [json.loads(line) for line in (synth_corpus / "train.jsonl").read_text().splitlines()[:n]]
    (root / "images").mkdir(parents=True)
    for record in records:
        shutil.copy(synth_corpus / record["image"], root / record["image"])
    return records


def test_decompose_a_json_array_train_json_with_k_auto(synth_corpus: Path, tmp_path: Path) -> None:
    records = small_corpus(synth_corpus, tmp_path / "corpus", 40)
    (tmp_path / "corpus" / "train.json").write_text(json.dumps(records, indent=1))  # one JSON array
    run = run_mixatlas("decompose", tmp_path / "corpus" / "train.json", "--out", tmp_path / "atlas",
                       "--k", "auto", "--embedder", "pixels", "--workers", "0")
    assert run.code == 0, run.err
    atlas = Atlas.load(tmp_path / "atlas")
    assert atlas.counts.sum() == 40 and list(atlas.concepts) == [f"c{i}" for i in range(atlas.k)]
    rows = pq.read_table(tmp_path / "atlas" / "samples.parquet").to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(record["id"] for record in records)


def test_decompose_max_pixels_and_allow_outside_root(synth_corpus: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    records = small_corpus(synth_corpus, corpus, 12)
    Image.new("RGB", (300, 200), (10, 200, 30)).save(corpus / "images" / "big.png")  # 60,000 pixels
    (tmp_path / "outside").mkdir()
    Image.new("RGB", (32, 32), (200, 10, 30)).save(tmp_path / "outside" / "x.png")
    conversation = records[0]["conversations"]
    records += [{"id": "big", "image": "images/big.png", "conversations": conversation},
                {"id": "outside", "image": "../outside/x.png", "conversations": conversation}]
    (corpus / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["decompose", corpus / "train.jsonl", "--embedder", "pixels", "--k", "2", "--workers", "0"]

    def kept_and_rejected(out: Path) -> tuple[set[str], list[str]]:
        ids = {row["id"] for row in pq.read_table(out / "samples.parquet").to_pylist()}
        reasons = [json.loads(line)["reason"] for line in (out / "rejects.jsonl").read_text().splitlines()]
        return ids, reasons

    default = run_mixatlas(*args, "--out", tmp_path / "a0")
    assert default.code == 0, default.err
    ids, reasons = kept_and_rejected(tmp_path / "a0")
    assert "big" in ids and "outside" not in ids and len(ids) == 13
    assert len(reasons) == 1 and reasons[0].startswith("image outside the corpus root")
    limited = run_mixatlas(*args, "--out", tmp_path / "a1", "--max-pixels", "50000", "--allow-outside-root")
    assert limited.code == 0, limited.err
    ids, reasons = kept_and_rejected(tmp_path / "a1")
    assert "outside" in ids and "big" not in ids and len(ids) == 13
    assert len(reasons) == 1 and reasons[0].startswith("image too large") and "50,000" in reasons[0]


def test_decompose_embedder_clip_names_concepts_zero_shot(synth_corpus: Path, tmp_path: Path) -> None:
    # `decompose --embedder clip:<model>` with a tiny random-init CLIP in a local folder (the README's hub
    # id only adds the download); concept names come zero-shot from the --concepts prompts
    from test_embed import save_tiny_clip

    corpus = tmp_path / "corpus"
    records = small_corpus(synth_corpus, corpus, 40)
    (corpus / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    model = save_tiny_clip(tmp_path / "clip")
    prompts = ["a bar chart", "a photo of an outdoor scene", "a table", "a document page"]
    (tmp_path / "concepts.yaml").write_text("".join(f"- {prompt}\n" for prompt in prompts))
    run = run_mixatlas("decompose", corpus / "train.jsonl", "--out", tmp_path / "atlas", "--embedder",
                       f"clip:{model}", "--k", "3", "--concepts", tmp_path / "concepts.yaml",
                       "--workers", "0")
    assert run.code == 0, run.err
    atlas = Atlas.load(tmp_path / "atlas")
    assert atlas.embedder == f"clip:{model}" and f"embedder clip:{model}" in run.err
    assert atlas.centroids().shape == (3, 16) and atlas.counts.sum() == 40  # CLIP's projection; no rejects
    labels = {"bar chart", "outdoor scene", "table", "document page"}
    assert all(name.split(" #")[0] in labels for name in atlas.concepts), atlas.concepts


# ----- bench/run_all.py --quick --only ----------------------------------------------------------------------


def test_run_all_quick_only_one_program_in_a_scratch_copy(tmp_path: Path) -> None:
    # A copy of the runner and of one cheap program: run_all writes beside itself (bench/out/quick/), so the
    # copy keeps the repository's bench/out untouched.
    (tmp_path / "bench").mkdir()
    for name in ("run_all.py", "bench_synth.py"):
        shutil.copy(REPO / "bench" / name, tmp_path / "bench" / name)
    proc = subprocess.run([sys.executable, "bench/run_all.py", "--quick", "--only", "bench_synth.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    quick = tmp_path / "bench" / "out" / "quick"
    (row,) = json.loads((quick / "run_all.json").read_text())
    assert (row["program"], row["ok"]) == ("bench_synth.py", True)
    synth = json.loads((quick / "synth.json").read_text())
    assert synth["results"] and {r["samples"] for r in synth["results"]} == {100}  # QUICK's --samples 100
