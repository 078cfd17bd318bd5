"""Benchmark metric functions: answer NLL per token, exact match, ANLS (OCR) and IoU>=0.5 (grounding).

Pure functions on plain Python values so they are tested on hand-made cases and reused by any evaluator.
"""

from __future__ import annotations

import math
import re

_BOX = re.compile(
    r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]"
)
ANLS_THRESHOLD = 0.5
IOU_THRESHOLD = 0.5


def nll_per_token(nll_sums: list[float], token_counts: list[int]) -> float:
    """Token-weighted mean NLL: sum of per-sample answer NLL sums / total answer tokens (nats/token)."""
    total_tokens = sum(token_counts)
    if total_tokens == 0:
        return math.nan
    return float(sum(nll_sums) / total_tokens)


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace and drop a trailing period, as VQA-style exact match does."""
    return " ".join(text.strip().lower().split()).rstrip(".").strip()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalized prediction equals the normalized reference, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(prediction: str, reference: str, threshold: float = ANLS_THRESHOLD) -> float:
    """Average Normalized Levenshtein Similarity of one answer (DocVQA/ST-VQA): 1 - NL if NL < threshold.

    NL = edit distance / max length on the normalized strings; similarities below 1 - threshold count 0.
    """
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    longest = max(len(pred), len(ref))
    if longest == 0:
        return 1.0
    distance = levenshtein(pred, ref) / longest
    return 1.0 - distance if distance < threshold else 0.0


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first `[x1, y1, x2, y2]` in `text` (any numbers), or None when there is none."""
    match = _BOX.search(text)
    if match is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in match.groups())
    return x1, y1, x2, y2


def box_iou(box_a: tuple[float, float, float, float], box_b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes (corners in any order)."""
    ax1, ax2 = sorted((box_a[0], box_a[2]))
    ay1, ay2 = sorted((box_a[1], box_a[3]))
    bx1, bx2 = sorted((box_b[0], box_b[2]))
    by1, by2 = sorted((box_b[1], box_b[3]))
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def iou_hit(prediction: str, reference: str, threshold: float = IOU_THRESHOLD) -> float | None:
    """1.0 if the predicted box overlaps the reference box with IoU >= threshold, 0.0 if not or unparsable.

    Returns None when the reference itself has no box (the sample is not a grounding sample).
    """
    ref_box = parse_box(reference)
    if ref_box is None:
        return None
    pred_box = parse_box(prediction)
    if pred_box is None:
        return 0.0
    return float(box_iou(pred_box, ref_box) >= threshold)
