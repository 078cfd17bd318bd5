"""The proxy trainer end to end on a small synthetic atlas (CPU, tiny preset, a few steps)."""

import json
import math
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from mixatlas.atlas import Atlas, build_atlas
from mixatlas.cli import app
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result, TrialContext
from mixatlas.objectives.proxy import ProxyConfig, ProxyObjective, resolve_mixture, train_proxy

FAST = {"batch_size": 8, "eval_samples": 3, "eval_batch_size": 8, "eval_max_new_tokens": 8, "warmup_steps": 2}


@pytest.fixture(scope="module")
def atlas_dir(synth_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("proxy") / "atlas"
    build_atlas(synth_corpus, out, embedder="pixels", k=4, progress=False)
    return out


@pytest.fixture(scope="module")
def benchmarks(atlas_dir):
    return sorted(p.stem for p in (Atlas.load(atlas_dir).corpus / "eval").glob("*.jsonl"))


def test_training_lowers_loss_and_scores_every_benchmark(atlas_dir, benchmarks, tmp_path):
    config = ProxyConfig(steps=30, lr=5e-3, eval_generate=True, **FAST)
    mixture = resolve_mixture("uniform", Atlas.load(atlas_dir))
    result = train_proxy(atlas_dir, mixture, config, tmp_path / "run", seed=0, progress=False)

    losses = np.array([loss for _, loss in result.curve])
    assert len(losses) == 30
    assert losses[-5:].mean() < losses[:5].mean() - 0.5  # from ~7 (ln 1024) on a random init
    for name in benchmarks:
        assert math.isfinite(result.metrics[f"{name}/nll"])
        assert 0.0 <= result.metrics[f"{name}/em"] <= 1.0
    assert any(key.endswith("/anls") for key in result.metrics)
    assert any(key.endswith("/iou50") for key in result.metrics)
    per_benchmark = [result.metrics[f"{b}/nll"] for b in benchmarks]
    assert result.metrics["avg/nll"] == pytest.approx(np.mean(per_benchmark))
    # The trainer writes its own files (one log line per step); metrics.json / mixture.json are the
    # folder owner's (the search loop, `proxy train`: see the CLI test below).
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / "proxy.yaml").exists()
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(1, 31))


def test_same_seed_same_curve_other_seed_other_curve(atlas_dir, tmp_path):
    config = ProxyConfig(steps=6, eval_generate=False, **FAST)
    mixture = resolve_mixture("natural", Atlas.load(atlas_dir))
    first = train_proxy(atlas_dir, mixture, config, tmp_path / "a", seed=3, progress=False)
    second = train_proxy(atlas_dir, mixture, config, tmp_path / "b", seed=3, progress=False)
    other = train_proxy(atlas_dir, mixture, config, tmp_path / "c", seed=4, progress=False)
    assert first.curve == second.curve
    assert first.metrics == second.metrics
    assert first.curve != other.curve


def test_proxy_objective_is_picklable_and_trains_in_the_trial_dir(atlas_dir, tmp_path):
    shipped = ProxyObjective({"steps": 3, "eval_generate": False, **FAST}, atlas_dir)
    objective = pickle.loads(pickle.dumps(shipped))
    mixture = resolve_mixture("uniform", Atlas.load(atlas_dir))
    result = objective.evaluate(mixture, TrialContext(trial_id=7, trial_dir=tmp_path / "t7", seed=1))
    assert math.isfinite(result.metrics["avg/nll"])
    assert len((tmp_path / "t7" / "train_log.jsonl").read_text().splitlines()) == 3


def test_cli_train_save_model_then_eval(atlas_dir, tmp_path):
    config = tmp_path / "proxy.yaml"
    ProxyConfig(eval_generate=False, **FAST).to_yaml(config)
    out = tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(
        app,
        [
            "proxy",
            "train",
            "--atlas",
            str(atlas_dir),
            "--mixture",
            "natural",
            "--out",
            str(out),
            "--config",
            str(config),
            "--steps",
            "3",
            "--seed",
            "2",
            "--save-model",
            "--pack-len",
            "320",
            "--checkpointing",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert (out / "model" / "config.json").exists()
    recorded = ProxyConfig.from_yaml(out / "proxy.yaml")  # the flags reached the trainer's config
    assert (recorded.pack_len, recorded.checkpointing, recorded.steps) == (320, True, 3)
    # metrics.json's cost section: this run's training throughput (MFU only where the peak is known: GPUs)
    cost = json.loads((out / "metrics.json").read_text())["cost"]
    assert {"train_s", "tokens", "tokens_per_s", "model_tflops"} <= set(cost)
    train_log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert cost["tokens"] == sum(record["tokens"] for record in train_log) > 0
    assert cost["tokens_per_s"] == pytest.approx(cost["tokens"] / cost["train_s"], rel=1e-2)
    assert cost["model_tflops"] > 0 and "mfu" not in cost  # CPU: no peak, so no MFU
    # `proxy train` owns its run folder: the mixture it trained on and the metrics.json contract.
    saved = json.loads((out / "mixture.json").read_text())
    assert saved["weights"] == resolve_mixture("natural", Atlas.load(atlas_dir)).to_dict()["weights"]
    evaluated = runner.invoke(app, ["proxy", "eval", "--atlas", str(atlas_dir), "--checkpoint", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    # The saved model reproduces the metrics the run wrote.
    again = Result.load(out / "eval.json").metrics
    for name, value in Result.load(out / "metrics.json").metrics.items():
        assert again[name] == pytest.approx(value, rel=1e-5)


def test_custom_preset_loads_local_vision_and_lm(atlas_dir, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM

    from mixatlas.objectives.proxy.tokenizer import train_bpe

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    CLIPVisionModel(vision).save_pretrained(tmp_path / "vision")
    lm = Qwen2Config(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    Qwen2ForCausalLM(lm).save_pretrained(tmp_path / "lm")
    train_bpe(["a plain text tokenizer for the lm"] * 10, 300).save_pretrained(tmp_path / "lm")
    config = ProxyConfig(
        preset="custom",
        vision=str(tmp_path / "vision"),
        lm=str(tmp_path / "lm"),
        steps=2,
        eval_generate=False,
        **FAST,
    )
    mixture = resolve_mixture("uniform", Atlas.load(atlas_dir))
    result = train_proxy(atlas_dir, mixture, config, tmp_path / "run", seed=0, progress=False)
    assert math.isfinite(result.metrics["avg/nll"])


def test_user_mistakes_are_one_line_errors(atlas_dir, tmp_path):
    with pytest.raises(MixAtlasError, match="no such file"):
        resolve_mixture(str(tmp_path / "missing.json"), Atlas.load(atlas_dir))
    with pytest.raises(MixAtlasError, match="needs both"):
        ProxyConfig.from_dict({"preset": "custom"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: -3\n")
    with pytest.raises(MixAtlasError, match=r"bad\.yaml: steps"):
        ProxyConfig.from_yaml(bad)


def test_prompts_longer_than_max_len_are_a_clear_error_not_divergence(atlas_dir, tmp_path):
    # 16 image tokens + the chat prompt do not fit 20 tokens, so no answer token survives truncation.
    config = ProxyConfig(steps=2, eval_generate=False, max_len=20, **FAST)
    mixture = resolve_mixture("uniform", Atlas.load(atlas_dir))
    with pytest.raises(MixAtlasError, match="max_len=20"):
        train_proxy(atlas_dir, mixture, config, tmp_path / "run", seed=0, progress=False)
