"""The proxy trainer's GPU switches on CPU: activation checkpointing and per-block torch.compile change how a
step is computed, never what it computes (tiny preset, a couple of steps)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from mixatlas.atlas import Atlas
from mixatlas.errors import MixAtlasError
from mixatlas.objectives.proxy import ProxyConfig, resolve_mixture, train_proxy
from mixatlas.objectives.proxy.config import TinyArch
from mixatlas.objectives.proxy.loss import loss_module
from mixatlas.objectives.proxy.model import (
    compile_blocks,
    llava_from_configs,
    tiny_configs,
    transformer_blocks,
)
from mixatlas.objectives.proxy.packing import device_batch, padded
from mixatlas.objectives.proxy.tokenizer import IGNORE_INDEX
from mixatlas.objectives.proxy.train import enable_checkpointing

FAST = {"batch_size": 4, "eval_samples": 2, "eval_batch_size": 4, "eval_generate": False, "warmup_steps": 1,
        "eval_benchmarks": ["chart-vqa"]}
PAD, IMAGE, VOCAB, SIZE = 0, 1, 300, 32
ARCH = TinyArch(vision_hidden=32, lm_hidden=32, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def atlas_dir(pixels_atlas, tmp_path_factory):
    """A private copy of the session atlas (the trainer caches its BPE tokenizer inside the atlas)."""
    out = tmp_path_factory.mktemp("switches") / "atlas"
    shutil.copytree(pixels_atlas, out)
    return out


def tiny_model():
    torch.manual_seed(0)
    vision, text = tiny_configs(ARCH, SIZE, VOCAB, max_len=64)
    return llava_from_configs(vision, text, IMAGE).train()


def batch(n: int = 4, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    patches = (SIZE // ARCH.patch_size) ** 2
    items = []
    for _ in range(n):
        prompt = rng.integers(2, VOCAB, 6).tolist()
        answer = rng.integers(2, VOCAB, int(rng.integers(2, 7))).tolist()
        ids = [5, *[IMAGE] * patches, *prompt, *answer]
        items.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (len(ids) - len(answer)) + answer,
                      "image": rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)})
    return device_batch(padded(items, PAD, 40), "cpu", torch.float32)


def loss_and_grads(model) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = loss_module(model)(**batch())
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return float(loss.detach()), torch.cat(grads)


def test_checkpointing_recomputes_blocks_and_gives_the_same_loss_and_gradients():
    plain = tiny_model()
    loss, grads = loss_and_grads(plain)
    model = tiny_model()
    enable_checkpointing(model)
    calls = []
    for block in transformer_blocks(model):  # a block's MLP starts again when the backward pass recomputes
        block.mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # (pre: the recompute stops early)
    ckpt_loss, ckpt_grads = loss_and_grads(model)
    assert len(calls) == 2 * len(transformer_blocks(model))  # every block recomputed: the switch is really on
    assert abs(ckpt_loss - loss) < 1e-5
    assert torch.allclose(ckpt_grads, grads, atol=1e-5, rtol=0)


def test_trainer_with_checkpointing_follows_the_same_curve(atlas_dir, tmp_path):
    mixture = resolve_mixture("uniform", Atlas.load(atlas_dir))
    curves = {}
    for on in (False, True):
        config = ProxyConfig(steps=3, checkpointing=on, **FAST)
        curves[on] = train_proxy(atlas_dir, mixture, config, tmp_path / str(on), seed=0, progress=False).curve
    # step 1's loss is the same forward; steps 2-3 follow the updates made from step 1-2's gradients
    assert np.allclose(np.array(curves[True]), np.array(curves[False]), atol=1e-5, rtol=0)


def test_compile_blocks_runs_a_training_step_with_the_eager_result(monkeypatch):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this torch build")
    if os.environ.get("MIXATLAS_TEST_INDUCTOR") != "1":
        # Inductor (compile_blocks' default backend) generates and builds C++ kernels on a CPU: 40-60 s cold
        # on the shared 2-core machine, over this suite's 30 s budget for one test. Dynamo's capture
        # of each block and AOT autograd are what can break on our model; they run here with the
        # `aot_eager` backend; MIXATLAS_TEST_INDUCTOR=1 runs the real inductor build instead.
        compile_with = torch.nn.Module.compile
        monkeypatch.setattr(torch.nn.Module, "compile",
                            lambda self, **kw: compile_with(self, **{"backend": "aot_eager", **kw}))
    torch._dynamo.reset()
    try:
        loss, grads = loss_and_grads(tiny_model())
        model = tiny_model()
        compile_blocks(model)
        assert all(block._compiled_call_impl is not None for block in transformer_blocks(model))
        compiled_loss, compiled_grads = loss_and_grads(model)
        assert abs(compiled_loss - loss) < 1e-5
        assert torch.allclose(compiled_grads, grads, atol=1e-5, rtol=0)
    finally:
        torch._dynamo.reset()


def test_the_compile_switch_compiles_every_block_of_the_trained_model():
    from mixatlas.objectives.proxy.runtime import DistributedContext
    from mixatlas.objectives.proxy.train import _parallel_model

    for on in (False, True):
        model = tiny_model()
        wrapped = _parallel_model(model, ProxyConfig(compile=on), DistributedContext())
        assert wrapped.llava is model  # the loss module around the model the optimizer updates
        assert {block._compiled_call_impl is not None for block in transformer_blocks(model)} == {on}


def test_pack_len_auto_packs_on_cuda_only_and_explicit_values_win():
    assert ProxyConfig().pack_len == "auto"
    assert (ProxyConfig().packing_length("cuda"), ProxyConfig().packing_length("cpu")) == (160, None)
    assert ProxyConfig(max_len=704).packing_length("cuda") == 704
    for given, expected in ((None, None), ("none", None), ("null", None), (320, 320), ("320", 320)):
        config = ProxyConfig.from_dict({"pack_len": given})
        assert config.packing_length("cuda") == config.packing_length("cpu") == expected
    with pytest.raises(MixAtlasError, match="pack_len 100 < max_len 160"):
        ProxyConfig.from_dict({"pack_len": 100})
    with pytest.raises(MixAtlasError, match="'often' is not a row length"):
        ProxyConfig.from_dict({"pack_len": "often"})
