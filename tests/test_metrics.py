"""Metric functions on hand-made cases."""

import math

import pytest

from mixatlas.objectives.proxy import metrics as M


def test_nll_per_token_is_token_weighted():
    # Two samples: 6 nats over 3 tokens and 1 nat over 1 token -> 7 / 4, not the mean of 2.0 and 1.0.
    assert M.nll_per_token([6.0, 1.0], [3, 1]) == pytest.approx(1.75)
    assert math.isnan(M.nll_per_token([], []))


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [("A red Cube.", "a red cube", 1.0), ("  two  cats ", "two cats", 1.0), ("two dogs", "two cats", 0.0)],
)
def test_exact_match_normalizes_case_space_and_period(prediction, reference, expected):
    assert M.exact_match(prediction, reference) == expected


def test_anls_hand_cases():
    assert M.anls("HELLO", "hello") == 1.0
    # One substitution in 5 characters: NL = 0.2 -> 0.8.
    assert M.anls("hallo", "hello") == pytest.approx(0.8)
    # Completely different: NL >= 0.5 -> 0.
    assert M.anls("xyz", "hello") == 0.0
    assert M.anls("", "") == 1.0
    assert M.levenshtein("kitten", "sitting") == 3


def test_box_parsing_and_iou():
    assert M.parse_box("the box is [10, 20, 30.5, 40]") == (10.0, 20.0, 30.5, 40.0)
    assert M.parse_box("no box here") is None
    assert M.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    # Half overlap: intersection 50, union 150.
    assert M.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert M.box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_iou_hit_threshold_and_unparsable():
    reference = "[0, 0, 10, 10]"
    assert M.iou_hit("[0, 0, 10, 9]", reference) == 1.0  # IoU 0.9
    assert M.iou_hit("[5, 0, 15, 10]", reference) == 0.0  # IoU 1/3
    assert M.iou_hit("a cat", reference) == 0.0
    assert M.iou_hit("[0, 0, 1, 1]", "a caption") is None
