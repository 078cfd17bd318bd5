"""Packed rows and chunked cross-entropy compute the same loss as padded rows and the full-logits loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.base import Result
from mixatlas.objectives.proxy import loss
from mixatlas.objectives.proxy.config import TinyArch
from mixatlas.objectives.proxy.loss import linear_cross_entropy, proxy_loss
from mixatlas.objectives.proxy.model import llava_from_configs, tiny_configs
from mixatlas.objectives.proxy.packing import device_batch, first_fit_rows, pack, padded
from mixatlas.objectives.proxy.tokenizer import IGNORE_INDEX

PAD, IMAGE, VOCAB, SIZE = 0, 1, 300, 32
ARCH = TinyArch(vision_hidden=32, lm_hidden=32, vocab_size=300)


@pytest.fixture(autouse=True)
def fresh_loss_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test builds the autograd Function anew (the module keeps the first one it built), so a change
    to its code is seen here even in a process that built it before (mutation testing forks such one)."""
    monkeypatch.setattr(loss, "_FUNCTION", None)


def tiny_llava():
    torch.manual_seed(0)
    vision, text = tiny_configs(ARCH, SIZE, VOCAB, max_len=64)
    model = llava_from_configs(vision, text, IMAGE)
    return model.eval()


def items(n: int, seed: int) -> list[dict]:
    """Chat-like samples: image tokens, a prompt (ignored) and an answer (supervised), varied lengths."""
    rng = np.random.default_rng(seed)
    patches = (SIZE // ARCH.patch_size) ** 2
    out = []
    for _ in range(n):
        prompt = rng.integers(2, VOCAB, rng.integers(2, 9)).tolist()
        answer = rng.integers(2, VOCAB, rng.integers(1, 7)).tolist()
        ids = [5, *[IMAGE] * patches, *prompt, *answer]
        labels = [IGNORE_INDEX] * (len(ids) - len(answer)) + answer
        image = rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
        out.append({"input_ids": ids, "labels": labels, "image": image})
    return out


def test_first_fit_rows_keeps_every_item_once_and_respects_capacity():
    lengths = [7, 3, 9, 2, 5, 5, 1]
    rows = first_fit_rows(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 4  # 32 tokens need at least 4 rows of 10


def test_packed_and_padded_batches_give_the_same_loss():
    model = tiny_llava()
    batch_items = items(6, seed=1)
    reference = padded(batch_items, PAD, max_len=40)
    packed = pack(batch_items, PAD, max_len=40, pack_len=48)
    assert packed["input_ids"].shape[0] < len(batch_items)  # samples really share rows
    assert sorted(packed["lengths"].tolist()) == sorted(reference["lengths"].tolist())
    with torch.no_grad():
        full = model(**device_batch(reference, "cpu", torch.float32)).loss
        chunked_padded = proxy_loss(model, device_batch(reference, "cpu", torch.float32), chunk=5)
        chunked_packed = proxy_loss(model, device_batch(packed, "cpu", torch.float32), chunk=5)
    assert abs(float(full) - float(chunked_padded)) < 1e-5
    assert abs(float(full) - float(chunked_packed)) < 1e-5


def test_packed_gradients_match_padded_gradients():
    model = tiny_llava()
    batch_items = items(5, seed=2)
    grads = []
    for batch in (padded(batch_items, PAD, 40), pack(batch_items, PAD, 40, 64)):
        model.zero_grad()
        proxy_loss(model, device_batch(batch, "cpu", torch.float32), chunk=3).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_linear_cross_entropy_equals_full_logits_reference():
    torch.manual_seed(3)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 50, (37,))
    ours = linear_cross_entropy(hidden, weight, target, chunk=8)
    (3.0 * ours).backward()
    got = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad, weight.grad = None, None
    ref = torch.nn.functional.cross_entropy(hidden @ weight.T, target)
    (3.0 * ref).backward()
    assert torch.allclose(ours, ref, atol=1e-12)
    assert torch.allclose(got[0], hidden.grad, atol=1e-12)
    assert torch.allclose(got[1], weight.grad, atol=1e-12)


def test_pack_rejects_rows_shorter_than_a_sample():
    with pytest.raises(MixAtlasError, match="pack_len"):
        pack(items(2, seed=4), PAD, max_len=40, pack_len=20)


def test_tiny_trainer_gives_the_same_loss_packed_and_reports_its_cost(synth_corpus, tmp_path):
    from mixatlas.atlas import Atlas, build_atlas
    from mixatlas.objectives.proxy import ProxyConfig, resolve_mixture, train_proxy

    atlas_dir = build_atlas(synth_corpus, tmp_path / "atlas", embedder="pixels", k=3, progress=False).dir
    mixture = resolve_mixture("uniform", Atlas.load(atlas_dir))
    fast = {"steps": 3, "batch_size": 8, "eval_samples": 2, "eval_generate": False, "warmup_steps": 1}
    runs = [train_proxy(atlas_dir, mixture, ProxyConfig(**fast, pack_len=pack_len), tmp_path / f"r{i}",
                        seed=0, progress=False) for i, pack_len in enumerate((None, 320))]
    assert abs(runs[0].curve[0][1] - runs[1].curve[0][1]) < 1e-5  # same weights, same samples
    for result in runs:
        assert result.cost["tokens"] > 0 and result.cost["tokens_per_s"] > 0
        assert result.cost["model_tflops"] > 0 and "mfu" not in result.cost  # no peak known for a CPU
        assert Result.from_dict(result.to_dict()).cost == result.cost


def test_loss_is_the_mean_over_assistant_tokens_only():
    from mixatlas.objectives.proxy.tokenizer import ChatFormat, train_bpe

    texts = ["What is written on the sign?", "STOP 42", "Describe the image.", "A red cube on a table."] * 20
    tokenizer = train_bpe(texts, 320)
    chat = ChatFormat(tokenizer, image_seq_length=(SIZE // ARCH.patch_size) ** 2)
    def turn(who: str, text: str) -> dict:
        return {"from": who, "value": text}

    conversations = [
        [turn("human", "<image>\nWhat is written on the sign?"), turn("gpt", "STOP 42"),
         turn("human", "Describe the image."), turn("gpt", "A red cube on a table.")],
        [turn("human", "<image>\nDescribe the image."), turn("gpt", "A red cube.")],
    ]
    encoded = [chat.encode(turns) for turns in conversations]
    # Independent answer mask: the tokens after each assistant marker up to and including its end marker.
    for sample in encoded:
        expected, inside = [], False
        for token in sample.input_ids:
            expected.append(token if inside else IGNORE_INDEX)
            inside = token != chat.end_id if inside else token == chat.assistant_id
        assert sample.labels == expected
    rng = np.random.default_rng(0)
    batch_items = [{"input_ids": s.input_ids, "labels": s.labels,
                    "image": rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)} for s in encoded]
    torch.manual_seed(0)
    vision, text = tiny_configs(ARCH, SIZE, len(tokenizer), max_len=128)
    model = llava_from_configs(vision, text, chat.image_id).eval()
    batch = device_batch(padded(batch_items, chat.pad_id, max_len=128), "cpu", torch.float32)
    with torch.no_grad():
        ours = float(proxy_loss(model, batch, chunk=4))
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    answer_nll, every_nll = [], []
    for row, sample in enumerate(encoded):
        for position in range(len(sample.input_ids) - 1):
            nll = -float(log_probs[row, position, sample.input_ids[position + 1]])
            every_nll.append(nll)
            if sample.labels[position + 1] != IGNORE_INDEX:
                answer_nll.append(nll)
    assert len(answer_nll) < len(every_nll) / 2
    assert ours == pytest.approx(np.mean(answer_nll), abs=1e-5)
    assert abs(np.mean(every_nll) - np.mean(answer_nll)) > 1e-2  # the two means really differ
