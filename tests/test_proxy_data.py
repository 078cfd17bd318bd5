"""The mixture-driven training stream: cell sampler, epoch cap, chat encoding and its label mask."""

import numpy as np
import pytest
from scipy.stats import chisquare

from mixatlas.errors import MixAtlasError
from mixatlas.objectives.proxy.data import CellSampler, align_mixture, cap_weights, collate
from mixatlas.objectives.proxy.tokenizer import IGNORE_INDEX, ChatFormat, train_bpe
from mixatlas.space import Mixture


def test_sampler_matches_mixture_weights_chi_square():
    rng = np.random.default_rng(0)
    cell_of_row = rng.integers(0, 6, size=600)  # 2 concepts x 3 tasks, ~100 rows per cell
    weights = np.array([[0.4, 0.1, 0.05], [0.2, 0.0, 0.25]])
    rows, cells = CellSampler(cell_of_row, weights, seed=1).draw(10_000)
    observed = np.bincount(cells, minlength=6)
    assert observed[4] == 0  # a zero-weight cell is never drawn
    support = weights.ravel() > 0
    _, p_value = chisquare(observed[support], 10_000 * weights.ravel()[support])
    assert p_value > 1e-3
    assert np.array_equal(cell_of_row[rows], cells)  # every row comes from its drawn cell


def test_sampler_is_seeded_and_uniform_inside_a_cell():
    cell_of_row = np.repeat([0, 1], [10, 50])
    weights = np.array([[0.5, 0.5]])
    a, _ = CellSampler(cell_of_row, weights, seed=3).draw(2_000)
    b, _ = CellSampler(cell_of_row, weights, seed=3).draw(2_000)
    assert np.array_equal(a, b)
    in_cell0 = a[a < 10]
    # Permutation walk: the 10 rows of cell 0 are each drawn floor or ceil of len/10 times.
    per_row = np.bincount(in_cell0, minlength=10)
    assert per_row.max() - per_row.min() <= 1


def test_epoch_cap_redistributes_excess_in_proportion():
    counts = np.array([[10, 1000, 1000]])
    weights = np.array([[0.5, 0.3, 0.2]])
    capped = cap_weights(weights, counts, total_draws=1000, max_epochs=2.0)
    # Cell 0 may give 10 * 2 = 20 draws = weight 0.02; its 0.48 excess goes 3:2 to the others.
    assert capped[0, 0] == pytest.approx(0.02)
    assert capped[0, 1] == pytest.approx(0.3 + 0.48 * 0.6)
    assert capped[0, 2] == pytest.approx(0.2 + 0.48 * 0.4)
    assert capped.sum() == pytest.approx(1.0)


def test_epoch_cap_saturated_and_empty_cells():
    counts = np.array([[10, 30, 0]])
    # Both non-empty cells capped: draws spread by cap, i.e. by count (equal epochs everywhere).
    capped = cap_weights(np.array([[0.5, 0.2, 0.3]]), counts, total_draws=1000, max_epochs=1.0)
    assert capped == pytest.approx(np.array([[0.25, 0.75, 0.0]]))
    with pytest.raises(MixAtlasError, match="empty cells"):
        cap_weights(np.array([[0.0, 0.0, 1.0]]), counts, total_draws=10, max_epochs=1.0)


def test_align_mixture_reorders_and_rejects_other_cells():
    mixture = Mixture(("b", "a"), ("ocr", "vqa"), np.array([[0.1, 0.2], [0.3, 0.4]]))
    aligned = align_mixture(mixture, ["a", "b"], ["vqa", "ocr"])
    assert aligned == pytest.approx(np.array([[0.4, 0.3], [0.2, 0.1]]))
    with pytest.raises(MixAtlasError, match="do not match"):
        align_mixture(mixture, ["a", "c"], ["vqa", "ocr"])


@pytest.fixture(scope="module")
def chat():
    texts = ["What is written on the sign?", "STOP 42", "Describe the image.", "A red cube on a table."] * 20
    return ChatFormat(train_bpe(texts, 320), image_seq_length=4)


def test_label_mask_covers_only_assistant_tokens(chat):
    turns = [
        {"from": "human", "value": "<image>\nWhat is written on the sign?"},
        {"from": "gpt", "value": "STOP 42"},
        {"from": "human", "value": "Describe the image."},
        {"from": "gpt", "value": "A red cube on a table."},
    ]
    encoded = chat.encode(turns)
    ids, labels = np.array(encoded.input_ids), np.array(encoded.labels)
    assert (ids == chat.image_id).sum() == 4 and ids[1:5].tolist() == [chat.image_id] * 4
    labeled = labels != IGNORE_INDEX
    assert np.array_equal(ids[labeled], labels[labeled])
    # Labeled tokens decode to exactly the two answers, each closed by <|end|>.
    spans = np.split(ids[labeled], np.flatnonzero(ids[labeled] == chat.end_id)[:-1] + 1)
    answers = [chat.decode_answer(span.tolist()) for span in spans]
    assert answers == ["STOP 42", "A red cube on a table."]
    assert not labeled[ids == chat.image_id].any()
    assert not labeled[(ids == chat.user_id) | (ids == chat.assistant_id)].any()


def test_prompt_ends_before_last_answer(chat):
    turns = [
        {"from": "human", "value": "<image>\nWhat is written on the sign?"},
        {"from": "gpt", "value": "STOP 42"},
    ]
    prompt, reference = chat.encode_prompt(turns)
    assert reference == "STOP 42"
    assert prompt[-1] == chat.assistant_id
    assert prompt == chat.encode(turns).input_ids[: len(prompt)]


def test_collate_pads_right_and_masks(chat):
    short = chat.encode([{"from": "human", "value": "<image>hi"}, {"from": "gpt", "value": "STOP"}])
    long = chat.encode(
        [
            {"from": "human", "value": "<image>Describe the image."},
            {"from": "gpt", "value": "A red cube on a table."},
        ]
    )
    black = np.zeros((3, 8, 8), dtype=np.uint8)
    white = np.full((3, 8, 8), 255, dtype=np.uint8)
    batch = collate(
        [
            {"input_ids": s.input_ids, "labels": s.labels, "image": image}
            for s, image in ((short, black), (long, white))
        ],
        chat.pad_id,
        max_len=64,
    )
    n, m = len(short.input_ids), len(long.input_ids)
    assert n < m and batch["input_ids"].shape == (2, m)
    # row 0: the short sample then pad ids, ignored labels and a zero mask on the padding; row 1 untouched
    assert batch["input_ids"][0].tolist() == short.input_ids + [chat.pad_id] * (m - n)
    assert batch["labels"][0].tolist() == short.labels + [IGNORE_INDEX] * (m - n)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (m - n)
    assert batch["input_ids"][1].tolist() == long.input_ids and batch["labels"][1].tolist() == long.labels
    assert batch["attention_mask"][1].tolist() == [1] * m
    # pixels CLIP-normalized per channel: (0 - mean) / std for black, (1 - mean) / std for white
    clip_mean = np.array([0.48145466, 0.4578275, 0.40821073])
    clip_std = np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = batch["pixel_values"].numpy()
    assert pixels.shape == (2, 3, 8, 8) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[0, :, 0, 0], -clip_mean / clip_std, rtol=1e-5)
    np.testing.assert_allclose(pixels[1, :, 3, 5], (1 - clip_mean) / clip_std, rtol=1e-5)
    # max_len truncates from the end, keeping the image tokens at the start
    one = {"input_ids": long.input_ids, "labels": long.labels, "image": black}
    cut = collate([one], chat.pad_id, max_len=8)
    assert cut["input_ids"][0].tolist() == long.input_ids[:8]


def test_prompt_without_an_answer_is_the_whole_conversation(chat):
    turns = [{"from": "human", "value": "<image>\nDescribe the image."}]
    prompt, reference = chat.encode_prompt(turns)
    assert prompt == chat.encode(turns).input_ids and prompt[-1] == chat.assistant_id
    assert reference == ""
    # An answer turn without a "value" is an empty reference, never the text "None".
    _, empty = chat.encode_prompt([*turns, {"from": "gpt"}])
    assert empty == ""


def test_decode_answer_stops_at_the_first_end_and_drops_special_tokens(chat):
    stop, cube = chat._text_ids("STOP 42"), chat._text_ids("A red cube on a table.")
    assert chat.decode_answer([*stop, chat.end_id, *cube, chat.end_id]) == "STOP 42"
    assert chat.decode_answer([*stop, chat.assistant_id, chat.image_id]) == "STOP 42"  # no end generated
