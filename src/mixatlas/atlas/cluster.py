"""k-means over L2-normalized embeddings, choice of k by silhouette, and concept naming (default
`c0..c{k-1}`, CLIP zero-shot names, or names read from a file).

Cluster ids are canonical: sorted by decreasing size (ties broken by the centroid's coordinates), so the
same data gives the same concept ids whichever backend ran.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixatlas.errors import MixAtlasError

# faiss trains on at most this many points per centroid (a seeded subsample), then assigns every point.
TRAIN_POINTS_PER_CENTROID = 4096
KMEANS_ITERATIONS = 20
KMEANS_RESTARTS = 5
# k-means++ seeds are drawn from this many rows (seeding the whole training set costs more than Lloyd).
SEEDING_SAMPLE = 4096
SINGLE_THREAD_MAX_N = 20_000
# scikit-learn: exact Lloyd up to this many points, MiniBatchKMeans above.
SKLEARN_FULL_MAX_N = 50_000
SILHOUETTE_SAMPLE = 4000
DEFAULT_K_RANGE = range(2, 17)

DEFAULT_CONCEPT_PROMPTS = (
    "a bar chart",
    "a line plot",
    "a pie chart",
    "a table of numbers",
    "a scanned document page",
    "a page of handwritten notes",
    "a screenshot of a user interface",
    "a screenshot of a web page",
    "a diagram with boxes and arrows",
    "a map",
    "a drawing of simple geometric shapes",
    "a mathematical equation",
    "a poster with large text",
    "a photo of an outdoor scene",
    "a photo of an indoor scene",
    "a photo of a person",
    "a photo of an animal",
    "a photo of food",
    "a photo of a vehicle",
    "a photo of a street sign",
    "a product photo",
    "a satellite image",
    "a medical scan",
)


def normalize_rows(x_nd: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) float32 rows of unit L2 norm (zero rows stay zero)."""
    x = np.ascontiguousarray(x_nd, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _check_k(n: int, k: int) -> None:
    if k < 1:
        raise MixAtlasError(f"--k {k}: the number of concepts must be at least 1")
    if n < k:
        raise MixAtlasError(f"--k {k}: only {n} usable samples; choose k <= {n} or add samples")


def assign(x_nd: np.ndarray, centroids_kd: np.ndarray) -> np.ndarray:
    """(n,) int32 index of the nearest centroid (cosine: both sides L2-normalized)."""
    x = normalize_rows(x_nd)
    c = normalize_rows(centroids_kd)
    # ||x - c||^2 = 2 - 2 x.c on the unit sphere, so the nearest centroid has the largest dot product.
    return np.argmax(x @ c.T, axis=1).astype(np.int32)


def canonical_order(labels_n: np.ndarray, centroids_kd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters by decreasing size (ties: lexicographic centroid) -> (labels_n, centroids_kd)."""
    k = len(centroids_kd)
    sizes = np.bincount(labels_n, minlength=k)
    keys = [(-int(sizes[j]), *np.round(centroids_kd[j], 6).tolist()) for j in range(k)]
    order = sorted(range(k), key=keys.__getitem__)
    new_id = np.empty(k, np.int32)
    new_id[order] = np.arange(k, dtype=np.int32)
    return new_id[labels_n].astype(np.int32), np.ascontiguousarray(centroids_kd[order], np.float32)


def kmeans_faiss(x_nd: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss Lloyd iterations from k-means++ seeds, best of KMEANS_RESTARTS, trained on a seeded subsample of
    at most k * TRAIN_POINTS_PER_CENTROID rows; every row is then assigned. Returns (labels_n, centroids_kd).
    """
    import faiss

    x = normalize_rows(x_nd)
    _check_k(len(x), k)
    limit = k * TRAIN_POINTS_PER_CENTROID
    rng = np.random.default_rng(seed)
    train = x if len(x) <= limit else x[np.sort(rng.choice(len(x), limit, replace=False))]
    threads = faiss.omp_get_max_threads()
    if len(train) < SINGLE_THREAD_MAX_N:
        faiss.omp_set_num_threads(1)  # thread start-up costs more than small problems' arithmetic
    try:
        best_model = _best_faiss_run(train, k, seed, rng)
    finally:
        faiss.omp_set_num_threads(threads)
    _, nearest = best_model.index.search(x, 1)
    return canonical_order(nearest[:, 0].astype(np.int32), best_model.centroids)


def _best_faiss_run(train: np.ndarray, k: int, seed: int, rng: np.random.Generator) -> Any:
    """The faiss.Kmeans, of KMEANS_RESTARTS k-means++-seeded runs on unit rows, with the best objective."""
    import faiss
    from sklearn.cluster import kmeans_plusplus

    best_similarity, best_model = -np.inf, None
    for restart in range(KMEANS_RESTARTS):
        seeding = train[rng.choice(len(train), min(len(train), SEEDING_SAMPLE), replace=False)]
        init, _ = kmeans_plusplus(seeding, k, random_state=seed + restart)
        model = faiss.Kmeans(train.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed + restart, spherical=True,
                             max_points_per_centroid=TRAIN_POINTS_PER_CENTROID, min_points_per_centroid=1)
        model.train(train, init_centroids=init)
        # On the unit sphere, maximal total cosine to the nearest centroid = minimal squared error.
        similarity = float((train @ model.centroids.T).max(axis=1).sum())
        if similarity > best_similarity:
            best_similarity, best_model = similarity, model
    return best_model


def kmeans_sklearn(x_nd: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn k-means (k-means++; MiniBatchKMeans above SKLEARN_FULL_MAX_N points)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = normalize_rows(x_nd)
    _check_k(len(x), k)
    if len(x) <= SKLEARN_FULL_MAX_N:
        model = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed).fit(x)
    else:
        model = MiniBatchKMeans(n_clusters=k, n_init=KMEANS_RESTARTS, batch_size=4096, random_state=seed)
        model.fit(x)
    centroids = normalize_rows(model.cluster_centers_)
    return canonical_order(assign(x, centroids), centroids)


def kmeans(x_nd: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means on L2-normalized rows of (n, d) `x_nd`: faiss when importable, else scikit-learn.

    Returns (labels_n int32, centroids_kd float32 with unit rows), canonically ordered.
    """
    try:
        import faiss  # noqa: F401
    except ImportError:
        return kmeans_sklearn(x_nd, k, seed)
    return kmeans_faiss(x_nd, k, seed)


def choose_k(x_nd: np.ndarray, k_range: Iterable[int] = DEFAULT_K_RANGE, seed: int = 0) -> int:
    """The k in `k_range` with the best silhouette score on a seeded sample of at most 4000 rows."""
    from sklearn.metrics import silhouette_score

    x = normalize_rows(x_nd)
    rng = np.random.default_rng(seed)
    if len(x) > SILHOUETTE_SAMPLE:
        x = x[np.sort(rng.choice(len(x), SILHOUETTE_SAMPLE, replace=False))]
    candidates = [k for k in k_range if 2 <= k < len(x)]
    if not candidates:
        raise MixAtlasError(f"--k auto: {len(x)} samples are too few to compare cluster counts; pass --k")
    scores = {}
    for k in candidates:
        labels, _ = kmeans(x, k, seed)
        scores[k] = silhouette_score(x, labels, metric="cosine") if len(np.unique(labels)) > 1 else -1.0
    return max(candidates, key=lambda k: (scores[k], -k))


def _unique(names: Sequence[str]) -> list[str]:
    """Suffix repeated names with #2, #3... so every concept name is distinct."""
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return unique


def default_names(k: int) -> list[str]:
    """Names when no text tower can name the clusters: `c0`, `c1`, ..., `c{k-1}`."""
    return [f"c{j}" for j in range(k)]


def read_names(path: Path, current: Sequence[str]) -> list[str]:
    """Concept names from a YAML file: a list of k names, or a mapping from a concept's index or current
    name to its new name (concepts not mentioned keep theirs). Names must be distinct and non-empty."""
    from mixatlas.yaml_io import YAMLError, safe_load

    try:
        data = safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MixAtlasError(f"--names {path}: cannot read ({exc.strerror}); check the path") from None
    except YAMLError as exc:
        raise MixAtlasError(f"--names {path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    names = list(current)
    if isinstance(data, list):
        if len(data) != len(names):
            raise MixAtlasError(f"--names {path}: {len(data)} names for {len(names)} concepts; give one per "
                                "concept, or a mapping such as `c3: receipts`")
        names = [str(name) for name in data]
    elif isinstance(data, dict):
        for key, name in data.items():
            index = key if isinstance(key, int) else names.index(key) if key in names else None
            if index is None or not 0 <= index < len(names):
                raise MixAtlasError(f"--names {path}: '{key}' is not a concept (indexes 0..{len(names) - 1}, "
                                    f"names {', '.join(current)})")
            names[index] = str(name)
    else:
        raise MixAtlasError(f"--names {path}: expected a list of names or a mapping `old: new`")
    names = [name.strip() for name in names]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise MixAtlasError(f"--names {path}: names must be distinct and non-empty, got {names}")
    return names


def prompt_label(prompt: str) -> str:
    """'a photo of an outdoor scene' -> 'outdoor scene': the prompt without its article/photo prefix."""
    return re.sub(r"^(an? )?(photo of |picture of |drawing of |screenshot of )?(an? )?", "", prompt.strip())


def names_from_prompts(centroids_kd: np.ndarray, text_pd: np.ndarray, prompts: Sequence[str]) -> list[str]:
    """Zero-shot names: each centroid takes the prompt whose text embedding is most cosine-similar.

    `centroids_kd` (k, d) image-space centroids, `text_pd` (p, d) text embeddings of `prompts`.
    """
    if len(prompts) != len(text_pd):
        raise ValueError("one text embedding per prompt expected")
    best = np.argmax(normalize_rows(centroids_kd) @ normalize_rows(text_pd).T, axis=1)
    return _unique([prompt_label(prompts[p]) for p in best])
