"""Hostile inputs (issue 12, input rows): each is a reject with a reason or one MixAtlasError line, never a
traceback, a silent change, a path escape or an unbounded allocation."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mixatlas.corpus import ImageRejected, Rejects, open_image, read_corpus
from mixatlas.errors import MixAtlasError

pytestmark = pytest.mark.faults

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")


def conv(question: str = "q", answer: str = "a") -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def rejects_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- row 9: image paths stay inside the corpus root ---------------------------------------------------------


def test_row9_image_paths_outside_the_corpus_root_are_rejected(tmp_path: Path) -> None:
    from mixatlas.atlas import build_atlas

    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    (corpus / "imgs").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(png((1, 2, 3)))
    for i in range(4):
        (corpus / "imgs" / f"{i}.png").write_bytes(png((60 * i, 0, 0)))
    images = ["imgs/0.png", "../outside/secret.png", "imgs/1.png", str(outside / "secret.png"),
              str(corpus / "imgs" / "2.png"), "imgs/../imgs/3.png"]
    lines = [json.dumps({"id": f"r{i}", "image": p, "conversations": conv()}) for i, p in enumerate(images)]
    (corpus / "c.jsonl").write_text("\n".join(lines) + "\n")

    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        kept = [s.id for s in read_corpus(corpus / "c.jsonl", rejects=rejects)]
    assert kept == ["r0", "r2", "r4", "r5"]
    entries = rejects_of(tmp_path / "rejects.jsonl")
    assert [e["where"] for e in entries] == [2, 4]
    for entry in entries:
        assert entry["reason"].startswith("image outside the corpus root: ")
        assert "--allow-outside-root" in entry["reason"]
    allowed = [s.image for s in read_corpus(corpus / "c.jsonl", allow_outside_root=True)]
    assert allowed[1] == str(outside / "secret.png")

    atlas = build_atlas(corpus / "c.jsonl", tmp_path / "A", k=2, workers=0, progress=False)
    assert atlas.info.n_samples == 4 and atlas.info.rejects_by_reason == {"image outside the corpus root": 2}
    assert not any("secret" in ref for ref in atlas.table(["image"]).column("image").to_pylist())


def test_row9_symbolic_links_out_of_the_root_are_rejected(tmp_path: Path) -> None:
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    (corpus / "imgs").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(png((1, 2, 3)))
    (corpus / "imgs" / "ok.png").write_bytes(png((9, 9, 9)))
    (corpus / "imgs" / "link.png").symlink_to(outside / "secret.png")
    (corpus / "linked").symlink_to(outside)
    (corpus / "imgs" / "inner.png").symlink_to(corpus / "imgs" / "ok.png")  # a link inside the root is fine
    images = ["imgs/ok.png", "imgs/link.png", "linked/secret.png", "imgs/inner.png"]
    lines = [json.dumps({"id": f"r{i}", "image": p, "conversations": conv()}) for i, p in enumerate(images)]
    (corpus / "c.jsonl").write_text("\n".join(lines) + "\n")
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        assert [s.id for s in read_corpus(corpus / "c.jsonl", rejects=rejects)] == ["r0", "r3"]
    entries = rejects_of(tmp_path / "rejects.jsonl")
    assert [e["where"] for e in entries] == [2, 3]
    assert all(f"is a link to {outside / 'secret.png'}" in e["reason"] for e in entries)


# -- row 10: YAML alias bombs ------------------------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for level in range(1, levels):
        text += f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]\n"
    return text


def _load_recipe(path: Path) -> object:
    from mixatlas.recipe import Recipe

    return Recipe.load(path)


def _load_search_config(path: Path) -> object:
    from mixatlas.search.config import SearchConfig

    return SearchConfig.load(path, {})


def _load_names(path: Path) -> object:
    from mixatlas.atlas.cluster import read_names

    return read_names(path, ["c0", "c1"])


def _load_task_map(path: Path) -> object:
    from mixatlas.atlas.tasks import load_source_map

    return load_source_map(path)


def _load_proxy_config(path: Path) -> object:
    from mixatlas.objectives.proxy.config import ProxyConfig

    return ProxyConfig.from_yaml(path)


@pytest.mark.parametrize("load", [_load_recipe, _load_search_config, _load_names, _load_task_map,
                                  _load_proxy_config])
def test_row10_yaml_alias_bomb_is_one_line_error_at_once(tmp_path: Path, load) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text("provenance:\n  " + alias_bomb().replace("\n", "\n  ").rstrip() + "\n")
    start = time.perf_counter()
    with pytest.raises(MixAtlasError) as caught:
        load(path)
    assert time.perf_counter() - start < 2.0
    message = str(caught.value)
    assert "\n" not in message and "aliases expand to more than" in message and "bomb.yaml" in message


def test_row10_a_few_aliases_still_load(tmp_path: Path) -> None:
    from mixatlas.yaml_io import safe_load

    assert safe_load("base: &b {lr: 0.1}\nrun1: *b\nrun2: *b\n") == {"base": {"lr": 0.1}, "run1": {"lr": 0.1},
                                                                     "run2": {"lr": 0.1}}
    with pytest.raises(yaml.YAMLError, match="recursive alias"):
        safe_load("a: &a [1, *a]\n")


# -- row 11: decompression bombs ---------------------------------------------------------------------------


def grey_png_of(width: int, height: int) -> bytes:
    """A valid, highly compressed all-black 8-bit grey PNG of width x height, streamed row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + black pixels
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(grey_png_of(12_000, 12_000))
    return path


def test_row11_pixel_bomb_is_rejected_from_its_header(bomb_png: Path) -> None:
    assert bomb_png.stat().st_size < 1_000_000
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageRejected) as caught:
            open_image(str(bomb_png))
    assert time.perf_counter() - start < 0.5  # nothing decoded: 144 M pixels would take seconds
    assert str(caught.value).startswith(f"image too large: {bomb_png}: 12000 x 12000 = 144,000,000 pixels is "
                                        "over the limit of 50,000,000; raise --max-pixels")


def test_row11_pillow_bomb_warning_is_a_reject_not_console_noise(bomb_png: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageRejected, match=r"image too large: .*over Pillow's own pixel limit"):
            open_image(str(bomb_png), max_pixels=10**9)  # past our limit, Pillow's own guard still holds


# -- row 12: '$' in names does not reach mathtext -----------------------------------------------------------


def test_row12_dollar_in_concept_and_study_names_draws(tmp_path: Path) -> None:
    from mixatlas.objectives.base import Target
    from mixatlas.report import figures

    names = ["p$^$q", r"cost $\foo$"]
    figures.recipe_heatmap(np.full((2, 5), 0.1), names, TASKS, tmp_path / "heat.png")
    panels = {"task $^$ axis": [figures.Series("study $^$", np.array([[3.0, 2.0, 1.0]]))]}
    figures.best_so_far(panels, tmp_path / "best.png", Target.parse("loss", minimize=True))
    grid = np.linspace(0.0, 1.0, 5)
    slices = [figures.AxisSlice("concept", name, grid, grid, grid / 10, 0.5) for name in names]
    figures.posterior_slices(slices, tmp_path / "posterior.png", "study $^$", "loss $x$")
    curve = np.array([[0.0, 2.0], [10.0, 1.0]])
    figures.loss_curves({"study $^$ (random)": [(curve, True)]}, tmp_path / "curves.png")
    for name in ("heat", "best", "posterior", "curves"):
        assert Image.open(tmp_path / f"{name}.png").size[0] > 0


def test_row12_report_of_a_study_and_concepts_named_with_dollars(tmp_path: Path) -> None:
    """The report of a study named `st$^$dy` whose concepts are `p$^$q` and `cost $\\foo$` builds: every
    figure of the page is a PNG and the names are shown as they are (the GP posterior figure, which needs a
    gp-ucb study and so torch, is drawn with such names in the test above)."""
    import html
    import re

    from mixatlas.objectives.base import Result, Target
    from mixatlas.report import build_report
    from mixatlas.search.study import Study
    from mixatlas.space import MixtureSpace

    concepts = ("p$^$q", r"cost $\foo$")
    space = MixtureSpace(concepts, TASKS, np.arange(10.0, 20.0).reshape(2, 5), mode="joint")
    path = tmp_path / "st$^$dy.db"
    study = Study.create(path, space=space, objective_spec={"kind": "callable"},
                         target=Target.parse("avg/nll", True), method="random", budget=4, seed=0)
    for i, params in enumerate(space.sample(4, np.random.default_rng(0))):
        trial = study.add_trial(params)
        study.start_trial(trial.id, trial_dir=tmp_path / f"t{i}", worker="local")
        curve = [[step, 3.0 - 0.1 * i - step / 100] for step in (0.0, 10.0, 20.0)]
        study.finish_trial(trial.id, Result(metrics={"avg/nll": curve[-1][1]}, curve=curve))
    study.close()
    index = build_report([path], tmp_path / "report $x$")
    page = index.read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert {"recipe_heatmap.png", "best_so_far.png", "loss_curves.png"} <= set(images)
    for name in images:
        assert Image.open(index.parent / name).size[0] > 0
    assert "st$^$dy" in page and all(html.escape(name) in page for name in concepts)


# -- row 13: invalid UTF-8 in a JSON array ------------------------------------------------------------------


def test_row13_invalid_utf8_in_a_json_array_is_a_reject_even_strict(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_bytes(b'[{"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", '
                     b'"value": "caf\xe9"}]}]')  # Latin-1 bytes, not UTF-8
    with pytest.raises(MixAtlasError, match=r"element 0 \(byte 1, line 1\): invalid UTF-8: byte 0xe9"):
        list(read_corpus(path, rejects=Rejects(None, strict=True)))
    with pytest.raises(MixAtlasError, match=r"empty corpus: .*\(1 rejected\)"):
        list(read_corpus(path, rejects=Rejects(None)))


# -- rows 14, 15: duplicate tar members and duplicate ids ---------------------------------------------------


def test_row14_duplicate_tar_members_reject_instead_of_swapping_images(tmp_path: Path) -> None:
    record = json.dumps({"conversations": conv()}).encode()
    shard = write_tar(tmp_path / "s.tar", [
        ("000.json", record), ("000.png", png((255, 0, 0))),
        ("001.json", record), ("001.png", png((0, 255, 0))), ("001.png", png((0, 0, 255))),
        ("002.json", record), ("002.png", png((9, 9, 9))),
        ("000.png", png((1, 1, 1))),  # a second 000.png after other samples
    ])
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        samples = list(read_corpus(shard, rejects=rejects))
    assert [s.id for s in samples] == ["000", "002"]
    entries = rejects_of(tmp_path / "rejects.jsonl")
    assert [e["where"] for e in entries] == ["member 001.png", "member 000.png"]
    assert entries[0]["reason"] == ("duplicate tar member: 001.png is member 3 and member 4; keep one copy "
                                    "in the shard")
    with pytest.raises(ImageRejected, match=r"duplicate tar member: .*s\.tar::000\.png: the shard holds two"):
        open_image(samples[0].image)  # the first record does not silently get the second image
    assert open_image(samples[1].image).getpixel((0, 0)) == (9, 9, 9)


def test_row15_duplicate_sample_ids_are_rejected(tmp_path: Path) -> None:
    lines = [json.dumps({"id": sample_id, "conversations": conv()}) for sample_id in ("a", "b", "a")]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        assert [s.id for s in read_corpus(tmp_path / "c.jsonl", rejects=rejects)] == ["a", "b"]
    (entry,) = rejects_of(tmp_path / "rejects.jsonl")
    assert entry["where"] == 3
    assert entry["reason"].startswith("duplicate id: 'a' is already the id of an earlier record")


# -- row 18: a WebDataset shard cut mid-file keeps the whole samples before the cut --------------------------


def test_row18_truncated_shard_keeps_the_samples_before_the_cut(tmp_path: Path) -> None:
    members = []
    for i in range(4):
        members += [(f"{i:03d}.json", json.dumps({"conversations": conv(answer=str(i))}).encode()),
                    (f"{i:03d}.png", png((40 * i, 0, 0), (32, 32)))]
    shard = write_tar(tmp_path / "s.tar", members)
    with tarfile.open(shard) as tar:
        cut = tar.getmember("002.png").offset_data + 20
    shard.write_bytes(shard.read_bytes()[:cut])

    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        samples = list(read_corpus(shard, rejects=rejects))
    assert [s.id for s in samples] == ["000", "001"]
    assert [open_image(s.image).getpixel((0, 0)) for s in samples] == [(0, 0, 0), (40, 0, 0)]
    (entry,) = rejects_of(tmp_path / "rejects.jsonl")
    assert entry["where"] == "member 002.png"
    assert entry["reason"].startswith("truncated tar: member 002.png is cut off")


# -- row 20: recipe fields of the wrong type; timeouts that cannot be used ----------------------------------


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("atlas", "str", "field 'atlas' must be a mapping"),
    ("constraints", {"max_epochs": "lots"}, "malformed recipe field"),
    ("constraints", {"max_epochs": float("inf")}, "max_epochs is inf"),
])
def test_row20_recipe_field_of_the_wrong_type_is_one_line(tmp_path: Path, field, value, problem) -> None:
    from mixatlas.recipe import Recipe
    from mixatlas.space import Mixture

    path = tmp_path / "recipe.yaml"
    Recipe(Mixture(("c0", "c1"), TASKS, np.full((2, 5), 0.1)), "fp", "cfp").save(path)
    data = yaml.safe_load(path.read_text())
    data[field] = value
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MixAtlasError, match=problem) as caught:
        Recipe.load(path)
    assert "\n" not in str(caught.value) and "recipe.yaml" in str(caught.value)


@pytest.mark.parametrize("timeout", ["inf", "1e300", "nan"])
def test_row20_unusable_timeout_is_one_line_before_any_study_file(tmp_path: Path, timeout: str) -> None:
    from mixatlas.search.config import SearchConfig

    study = tmp_path / "s.db"
    with pytest.raises(MixAtlasError, match="timeout") as caught:
        SearchConfig.load(None, {"objective": "synthetic", "synthetic": "task", "budget": 2, "study": study,
                                 "timeout": timeout})
    assert "\n" not in str(caught.value) and not study.exists()


# -- row 22: reasons in plain words, only options that exist -------------------------------------------------


def test_row22_image_rejects_name_the_file_and_no_missing_option(tmp_path: Path, bomb_png: Path) -> None:
    full = png((5, 5, 5), (64, 64))
    files = {"empty.png": b"", "text.png": b"hello", "cut.png": full[: len(full) // 2]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    refs = [str(tmp_path / name) for name in [*files, "missing.png"]]
    refs += [str(bomb_png), f"{tmp_path}/x.tar::a.png"]
    kinds = []
    for ref in refs:
        with pytest.raises(ImageRejected) as caught:
            open_image(ref)
        reason = str(caught.value)
        assert ref in reason and "\n" not in reason and "object at 0x" not in reason
        assert "--image-root" not in reason and "; " in reason  # a cause, then a fix
        kinds.append(caught.value.kind)
    assert kinds == ["empty image", "not an image", "truncated image", "missing image", "image too large",
                     "missing image"]


# -- row 24: target weights that overflow -------------------------------------------------------------------


def test_row24_overflowing_target_weights_are_an_error_not_zero_weights() -> None:
    from mixatlas.objectives.base import Target

    with pytest.raises(MixAtlasError, match="the weights overflow"):
        Target.parse("1e308*a + 1e308*b")
    assert Target.parse("3*a + 1*b").weights == (("a", 0.75), ("b", 0.25))
