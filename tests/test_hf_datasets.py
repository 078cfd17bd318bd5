"""Hugging Face `datasets` folders as corpora: save_to_disk Arrow, DatasetDict, hub-cache Parquet."""

import io
import json

import pytest
from typer.testing import CliRunner

from mixatlas.atlas import Atlas
from mixatlas.cli import app
from mixatlas.corpus import Rejects, open_image, read_corpus
from mixatlas.corpus.hf_datasets import is_hf_dataset
from mixatlas.errors import MixAtlasError

datasets = pytest.importorskip("datasets", reason="the test writes real folders with `datasets` ([test])")

PROMPTS = [("Describe the image.", "A coloured square."), ("What text is shown?", "OPEN"),
           ("How many squares are there?", "1")]


def _png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _features():
    from datasets import Features, Image, Value

    turn = {"from": Value("string"), "value": Value("string")}
    return Features({"id": Value("string"), "image": Image(), "conversations": [turn],
                     "data_source": Value("string")})


def _rows(n: int, prefix: str) -> dict:
    """LLaVA-OneVision's columns: id, image ({bytes, path}), conversations, data_source."""
    rows: dict = {"id": [], "image": [], "conversations": [], "data_source": []}
    for i in range(n):
        prompt, answer = PROMPTS[i % len(PROMPTS)]
        rows["id"].append(f"{prefix}-{i}")
        rows["image"].append({"bytes": _png((40 * (i % 6), 255 - 30 * (i % 8), 90)), "path": None})
        rows["conversations"].append([{"from": "human", "value": f"<image>\n{prompt}"},
                                      {"from": "gpt", "value": answer}])
        rows["data_source"].append(prefix)
    return rows


def test_save_to_disk_folder_decomposes_end_to_end(tmp_path):
    folder = tmp_path / "llava_ov_sample"
    datasets.Dataset.from_dict(_rows(30, "ov"), features=_features()).save_to_disk(str(folder),
                                                                                    max_shard_size="4KB")
    shards = sorted(folder.glob("data-*.arrow"))
    assert len(shards) > 1 and (folder / "state.json").is_file() and is_hf_dataset(folder)
    out = tmp_path / "atlas"
    run = CliRunner().invoke(app, ["decompose", str(folder), "--out", str(out), "--k", "2", "--workers", "0"])
    assert run.exit_code == 0, run.output
    atlas = Atlas.load(out)
    assert atlas.info.format == "hf" and atlas.info.n_samples == 30 and atlas.info.rejects == 0
    table = atlas.table(["id", "source", "image"]).to_pydict()
    assert sorted(table["id"]) == sorted(f"ov-{i}" for i in range(30))
    assert set(table["source"]) == {"llava_ov_sample"}
    assert all(".arrow::" in ref for ref in table["image"])
    first = table["id"].index("ov-7")
    assert open_image(table["image"][first]).getpixel((3, 3)) == (40, 255 - 30 * 7, 90)


def test_dataset_dict_reads_the_train_split_only(tmp_path):
    folder = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(_rows(5, "tr"), features=_features()),
        "test": datasets.Dataset.from_dict(_rows(3, "te"), features=_features()),
    }).save_to_disk(str(folder))
    samples = list(read_corpus(folder))
    assert [s.id for s in samples] == [f"tr-{i}" for i in range(5)]
    assert samples[0].meta["data_source"] == "tr" and samples[1].prompt == PROMPTS[1][0]


def test_hub_cache_parquet_with_image_bytes_reads_each_subset(tmp_path):
    repo = tmp_path / "hub" / "datasets--lmms-lab--LLaVA-OneVision-Data"
    snapshot = repo / "snapshots" / "0123abcd"
    for subset in ("CLEVR-Math(MathV360K)", "sharegpt4v(coco)"):
        (snapshot / subset).mkdir(parents=True)
        data = datasets.Dataset.from_dict(_rows(4, subset[:5]), features=_features())
        data.to_parquet(str(snapshot / subset / "train-00000-of-00001.parquet"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for path in (repo, snapshot):
        samples = list(read_corpus(path))
        assert [s.source for s in samples] == ["CLEVR-Math(MathV360K)"] * 4 + ["sharegpt4v(coco)"] * 4
        assert open_image(samples[5].image).getpixel((0, 0)) == (40, 225, 90)


def test_a_shard_without_conversations_is_a_one_line_error(tmp_path):
    folder = tmp_path / "bad"
    datasets.Dataset.from_dict({"image": [{"bytes": _png((1, 2, 3)), "path": None}], "text": ["hi"]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "text": datasets.Value("string")})
                               ).save_to_disk(str(folder))
    with pytest.raises(MixAtlasError, match=r"data-00000-of-00001\.arrow: no 'conversations'.*image, text"):
        list(read_corpus(folder, rejects=Rejects(tmp_path / "rejects.jsonl")))
    state = {"_data_files": [{"filename": "data-00009-of-00010.arrow"}]}
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(MixAtlasError, match=r"listed in the dataset's state\.json but missing"):
        list(read_corpus(folder))


def test_a_list_of_images_column_takes_the_first_image(tmp_path):
    from datasets import Features, Image, Sequence, Value

    turn = {"from": Value("string"), "value": Value("string")}
    features = Features({"images": Sequence(Image()), "conversations": [turn]})
    talk = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]
    red, blue = ({"bytes": _png(colour), "path": None} for colour in ((200, 0, 0), (0, 0, 200)))
    rows = {"images": [[red, blue], []], "conversations": [talk, talk]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "multi"))
    first, text_only = read_corpus(tmp_path / "multi")
    assert open_image(first.image).getpixel((0, 0)) == (200, 0, 0)
    assert text_only.image is None
