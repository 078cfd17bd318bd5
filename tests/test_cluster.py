"""k-means (faiss and scikit-learn), choice of k, assignment and naming on known blobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from mixatlas.atlas.cluster import (
    assign,
    canonical_order,
    choose_k,
    default_names,
    kmeans,
    kmeans_faiss,
    kmeans_sklearn,
    names_from_prompts,
    prompt_label,
    read_names,
)
from mixatlas.errors import MixAtlasError


def blobs(sizes: list[int], dim: int = 16, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Well-separated clusters on the unit sphere: (n, dim) points and (n,) true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    points = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return (3.0 * points[order]).astype(np.float32), labels[order]  # scaled: k-means must normalize


@pytest.mark.parametrize("backend", [kmeans_faiss, kmeans_sklearn, kmeans])
def test_kmeans_recovers_blobs_with_canonical_ids(backend) -> None:
    x, truth = blobs([150, 100, 80, 40])
    labels, centroids = backend(x, 4, seed=3)
    assert labels.dtype == np.int32 and labels.shape == (len(x),)
    assert centroids.dtype == np.float32 and centroids.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert np.bincount(labels).tolist() == [150, 100, 80, 40]  # ids ordered by decreasing size
    np.testing.assert_array_equal(assign(x, centroids), labels)


@pytest.mark.parametrize("backend", [kmeans_faiss, kmeans_sklearn])
def test_kmeans_is_deterministic_for_a_seed(backend) -> None:
    x, _ = blobs([60, 60, 60], spread=0.6, seed=1)  # overlapping: the result depends on the seed path
    first_labels, first_centroids = backend(x, 5, seed=11)
    again_labels, again_centroids = backend(x, 5, seed=11)
    np.testing.assert_array_equal(first_labels, again_labels)
    np.testing.assert_array_equal(first_centroids, again_centroids)


def test_canonical_order_ignores_the_backend_numbering() -> None:
    x, _ = blobs([50, 30, 20], seed=2)
    labels, centroids = kmeans_faiss(x, 3, seed=0)
    permutation = np.array([2, 0, 1])
    shuffled_labels = np.argsort(permutation)[labels].astype(np.int32)
    relabelled, reordered = canonical_order(shuffled_labels, centroids[permutation])
    np.testing.assert_array_equal(relabelled, labels)
    np.testing.assert_array_equal(reordered, centroids)


def test_assign_picks_the_nearest_centroid_by_cosine() -> None:
    centroids = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    points = np.array([[10.0, 1.0], [0.1, 0.5], [-3.0, -1.0], [0.2, -0.1]], np.float32)
    assert assign(points, centroids).tolist() == [0, 1, 2, 0]


def test_choose_k_finds_the_number_of_blobs() -> None:
    x, _ = blobs([80, 70, 60, 50], spread=0.03, seed=5)
    assert choose_k(x, range(2, 9), seed=0) == 4


def test_too_few_samples_is_a_user_error() -> None:
    x, _ = blobs([3])
    with pytest.raises(MixAtlasError, match="choose k <= 3"):
        kmeans(x, 5, seed=0)
    with pytest.raises(MixAtlasError, match="too few"):
        choose_k(x[:2], range(2, 5))


def test_names_from_prompts_take_the_closest_text_and_stay_unique() -> None:
    prompts = ["a bar chart", "a photo of an outdoor scene", "a table of numbers"]
    text = np.eye(3, 4, dtype=np.float32)
    centroids = np.array([[0.1, 0.9, 0.0, 0.0], [0.9, 0.2, 0.0, 0.1], [0.8, 0.0, 0.1, 0.0]], np.float32)
    assert names_from_prompts(centroids, text, prompts) == ["outdoor scene", "bar chart", "bar chart #2"]


def test_prompt_labels_and_default_names() -> None:
    assert prompt_label("a photo of an outdoor scene") == "outdoor scene"
    assert prompt_label("a screenshot of a user interface") == "user interface"
    assert prompt_label("an X-ray") == "X-ray"
    assert default_names(3) == ["c0", "c1", "c2"]


def test_read_names_from_a_list_or_a_mapping(tmp_path: Path) -> None:
    names = tmp_path / "names.yaml"
    names.write_text("- receipts\n- skylines\n- charts\n")
    assert read_names(names, ["c0", "c1", "c2"]) == ["receipts", "skylines", "charts"]
    names.write_text("1: skylines\nc2: charts\n")
    assert read_names(names, ["c0", "c1", "c2"]) == ["c0", "skylines", "charts"]
    for text, problem in [("- a\n- b\n", "2 names for 3 concepts"), ("c7: x\n", "'c7' is not a concept"),
                          ("0: c1\n", "distinct"), ("just text", "a list of names or a mapping")]:
        names.write_text(text)
        with pytest.raises(MixAtlasError, match=problem):
            read_names(names, ["c0", "c1", "c2"])
