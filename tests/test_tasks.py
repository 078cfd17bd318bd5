"""Task typing: every box/point format, prompt cues in English and Chinese, multi-turn tie rule, the
`--tasks` precedence (explicit > field > user map > shipped map > rules), and per-task recall on the
labelled set tests/data/typing_prompts.jsonl (public prompt formats, each row labelled by its source)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mixatlas.atlas.task_rules import classify_turn, count_boxes, has_region
from mixatlas.atlas.tasks import TaskTyper, type_conversation
from mixatlas.corpus.readers import read_corpus
from mixatlas.corpus.sample import TASKS, Sample
from mixatlas.corpus.synth import BENCHMARKS
from mixatlas.errors import MixAtlasError

LABELLED = Path(__file__).parent / "data" / "typing_prompts.jsonl"


def conversation(prompt: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]


def sample(prompt: str = "How many?", answer: str = "3", **fields) -> Sample:
    return Sample(id="s", source=fields.pop("source", "web"), image=fields.pop("image", None),
                  conversations=conversation(prompt, answer), **fields)


def labelled_rows() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(("text", "boxes"), [
    ("[0.12, 0.30, 0.45, 0.98]", 1),  # normalized to 1 (LLaVA-1.5 RefCOCO)
    ("[345, 120, 512, 600] and [1,2,3,4]", 2),  # pixels / 0-1000, [x, y, w, h] alike
    ("[[086,540,400,760];[10,20,30,40]]", 2),  # CogVLM
    ("[0.100,0.200,0.400,0.900;0.5,0.5,0.6,0.6]", 2),  # Shikra, several boxes
    ("<ref>the dog</ref><box>(10,20),(200,300)</box>", 1),  # Qwen-VL
    ("<|box_start|>(120,80),(410,960)<|box_end|>", 1),  # Qwen2-VL
    ("<box>[[613, 402, 801, 748]]</box>", 1),  # InternVL
    ("{<4><50><30><65>}", 1),  # MiniGPT-v2
    ("car<loc_52><loc_332><loc_932><loc_774>", 1),  # Florence-2
    ("<loc0256><loc0128><loc0512><loc0384> cat", 1),  # PaliGemma
    ("<object><patch_index_0044><patch_index_0863></object>", 1),  # Kosmos-2
    ('[{"bbox_2d": [10, 20, 80, 90], "label": "cake"}]', 1),  # Qwen2.5-VL JSON
    ('<p data-bbox="40 30 600 80">Annual Report</p>', 1),  # Qwen2.5-VL HTML
    ("There are 4 apples and 2 pears.", 0),
])
def test_box_formats(text: str, boxes: int) -> None:
    assert count_boxes(text) == boxes
    assert has_region(text) == (boxes > 0)


@pytest.mark.parametrize("text", [
    '<point x="45.2" y="63.1" alt="mug">mug</point>', '<points x1="10" y1="20" x2="30" y2="22">',
    '[{"point_2d": [346, 320]}]', "the object at point [0.412,0.570]", "[[120, 40], [200, 38], [210, 300]]",
    "<poly>(10,20),(40,22),(45,90)</poly>", "What is <region1> doing?", "Describe <mask> briefly.",
])
def test_point_polygon_and_region_formats(text: str) -> None:
    assert has_region(text)


@pytest.mark.parametrize(("prompt", "answer", "task", "rule"), [
    # a region in the prompt: region captioning and region questions are grounding
    ("Please provide a short description for this region: [0.35, 0.21, 0.68, 0.97].", "A woman.", "grounding",
     "region-in-prompt"),
    ("What is the object [100, 200, 300, 400] doing?", "grazing", "grounding", "region-in-prompt"),
    # an answer boxing two referred objects stays grounding; repeated category labels are detection
    ("Where are the man and the dog?", "<ref>the man</ref><box>(1,1),(4,9)</box><ref>the dog</ref>"
     "<box>(5,6),(7,9)</box>", "grounding", "box-in-answer"),
    ("Locate the cakes.", '[{"bbox_2d": [1, 2, 3, 4], "label": "cake"}, {"bbox_2d": [5, 6, 7, 8], '
     '"label": "cake"}]', "detection", "repeated-labels"),
    # detection intent without boxes in the answer
    ("Detect all instances of person.", "", "detection", "detect-intent"),
    ("Locate every instance that belongs to the following categories: 'cup, fork'. Report bbox coordinates "
     "in JSON format.", "", "detection", "detect-intent"),
    ("检测图中所有的人并输出坐标。", "", "detection", "detect-intent"),
    ("框出图中的猫。", "", "grounding", "locate-intent"),
    # captioning phrasings, and "describe" inside a VQA question
    ("Analyze the image in detail.", "", "captioning", "caption-intent"),
    ("Explain the visual content of the image.", "", "captioning", "caption-intent"),
    ("What's in the picture?", "", "captioning", "caption-intent"),
    ("请详细描述这张图片。", "", "captioning", "caption-intent"),
    ("Describe the relationship between the two people.", "friends", "vqa", "default"),
    # OCR without the word OCR; text that belongs to the prompt or the answer format is no cue
    ("Recognize all the words in the image.", "", "ocr", "ocr-intent"),
    ("Extract the company name, date and total from this receipt.", "", "ocr", "ocr-intent"),
    ("Convert the document to markdown.", "", "ocr", "ocr-intent"),
    ("识别图中的文字。", "", "ocr", "ocr-intent"),
    ("Read the passage and answer: how old is the tree in the photo?", "200", "vqa", "question"),
    ("How many birds? Answer with just a number, without any additional text.", "5", "vqa", "question"),
    ("What is the brand?\nReference OCR token: nikon", "nikon", "ocr", "ocr-tokens"),
    ("Which word does not rhyme?\nA. bike\nB. hike\nC. sun", "C", "vqa", "multiple-choice"),
    ("<OD>", "", "detection", "task-token"),
    ("caption en", "", "captioning", "task-token"),
])
def test_rules_decide_with_the_named_rule(prompt: str, answer: str, task: str, rule: str) -> None:
    assert classify_turn(prompt, answer) == (task, rule)


def test_recall_per_task_on_the_labelled_set() -> None:
    rows = labelled_rows()
    assert len(rows) >= 300
    assert {row["task"] for row in rows} == set(TASKS) and {row["lang"] for row in rows} == {"en", "zh"}
    for lang in ("en", "zh"):
        assert {row["task"] for row in rows if row["lang"] == lang} == set(TASKS)
    hits, totals = Counter(), Counter()
    for row in rows:
        totals[row["task"]] += 1
        hits[row["task"]] += classify_turn(row["prompt"], row["answer"])[0] == row["task"]
    recall = {task: hits[task] / totals[task] for task in TASKS}
    assert min(recall.values()) >= 0.9, recall
    assert sum(hits.values()) / len(rows) >= 0.95


def test_multi_turn_takes_the_majority_and_ties_go_to_the_more_specific_task() -> None:
    turns = conversation("What color is the car?", "red") + conversation("What does the sign say?", "stop")
    turns += conversation("How many wheels?", "4")
    typing = type_conversation(turns)
    assert (typing.task, typing.rule, typing.mix) == ("vqa", "question", "vqa:2 ocr:1")
    tie = conversation("这是什么", "一只狗")
    tie += conversation('输出"狗"的检测框', "<ref>狗</ref><box>(2,3),(6,9)</box>")
    typing = type_conversation(tie)
    assert (typing.task, typing.rule, typing.mix) == ("grounding", "box-in-answer", "vqa:1 grounding:1")
    assert type_conversation([]).task == "vqa"


def test_agreement_with_meta_task_on_the_synthetic_corpus(synth_corpus: Path) -> None:
    files = [synth_corpus / "train.jsonl"] + [synth_corpus / "eval" / f"{name}.jsonl" for name in BENCHMARKS]
    typer = TaskTyper.from_spec("auto")
    samples = list(read_corpus(files))
    agree = sum(typer.task_of(s) == s.meta["task"] for s in samples)
    assert len(samples) == 600 + 20 * len(BENCHMARKS)
    assert agree / len(samples) >= 0.98


def test_auto_precedence_explicit_then_maps_then_rules(tmp_path: Path) -> None:
    auto = TaskTyper.from_spec("auto")
    # the shipped map: by source name, then by image folder; `rules` folders go to the rules
    assert auto.type(sample("What is this?", "x", source="textcaps")).rule == "known:source:textcaps"
    assert auto.task_of(sample("Is it red?", "no", source="ocr_vqa_train")) == "ocr"
    assert auto.task_of(sample("Is it red?", "no", image="/d/gqa/images/1.jpg")) == "vqa"
    coco = "/data/coco/train2017/1.jpg"
    assert auto.task_of(sample("Describe this image.", "A cat.", image=coco)) == "captioning"
    assert auto.task_of(sample("Is it red?", "no", image=coco)) == "vqa"
    # `rules:ocr` (textvqa/ also holds TextCaps): a caption cue wins, a plain question takes the prior
    textvqa = "/data/textvqa/train_images/1.jpg"
    rule = auto.type(sample("Is it red?", "no", image=textvqa)).rule
    assert rule == "known:image:textvqa/train_images:prior"
    assert auto.task_of(sample("Is it red?", "no", image=textvqa)) == "ocr"
    assert auto.task_of(sample("Write a caption for the image.", "A sign.", image=textvqa)) == "captioning"
    # explicit task first; an unknown label falls through
    assert auto.task_of(sample(source="textcaps", task="VQA")) == "vqa"
    assert auto.type(sample(source="textcaps", task="chat")).task == "captioning"
    # a user map comes before the shipped one, and `rules` sends a known source back to the rules
    user = tmp_path / "fix.yaml"
    user.write_text("sources:\n  textcaps: rules\n  'my_ref*': REC\nimages:\n  scans/: ocr\n")
    typer = TaskTyper.from_spec(f"map:{user}")
    assert typer.task_of(sample("How many?", "3", source="textcaps")) == "vqa"
    assert typer.type(sample(source="my_refs_v2")).rule == "map:source:my_ref*"
    assert typer.task_of(sample(image="/x/scans/p1.png")) == "ocr"
    assert typer.task_of(sample(source="ocr_vqa")) == "ocr"  # shipped map still applies
    user.write_text("textcaps: caption\n")  # the flat form maps sources
    assert TaskTyper.from_spec(f"map:{user}").task_of(sample(source="textcaps")) == "captioning"
    user.write_text("sources:\n  textcaps: rules\nshipped: false\n")  # shipped map off
    assert TaskTyper.from_spec(f"map:{user}").task_of(sample(source="ocr_vqa")) == "vqa"
    assert TaskTyper.from_spec("rules").task_of(sample(source="ocr_vqa")) == "vqa"
    by_field = TaskTyper.from_spec("field:meta_info.kind")
    assert by_field.type(sample(meta={"meta_info": {"kind": "det"}})).rule == "field:meta_info.kind"
    assert by_field.task_of(sample("Read the sign.", "stop", meta={})) == "ocr"


def test_a_mix_file_source_says_rules_and_its_image_folders_decide(tmp_path: Path) -> None:
    # LLaVA-1.5's mix is one JSON file: its source (`llava_v1_5_mix665k: rules`) passes on to the folders
    auto = TaskTyper.from_spec("auto")
    for source in ("llava_v1_5_mix665k", "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k"):
        def typed(image: str, prompt: str = "Is the sky blue?", source: str = source) -> tuple[str, str]:
            typing = auto.type(sample(prompt, "yes", source=source, image=image))
            return typing.task, typing.rule

        assert typed("ocr_vqa/images/1.jpg") == ("ocr", "known:image:ocr_vqa/images")
        assert typed("gqa/images/2.jpg") == ("vqa", "known:image:gqa/images")
        assert typed("textvqa/train_images/3.jpg") == ("ocr", "known:image:textvqa/train_images:prior")
        # a `rules` folder, or no known folder: the rules decide
        assert typed("coco/train2017/4.jpg", "Describe this image.") == ("captioning", "caption-intent")
        assert typed("coco/train2017/4.jpg") == ("vqa", "question")
        assert typed("misc/5.jpg") == ("vqa", "question")
    # a `rules:TASK` source keeps its prior; a task source still wins over its folders
    llavar = auto.type(sample("Is the sky blue?", "yes", source="llavar_gpt4_20k", image="gqa/images/2.jpg"))
    assert llavar.rule == "known:source:llavar_gpt4_20k:prior"
    assert auto.task_of(sample("Is it?", "no", source="textcaps", image="gqa/images/2.jpg")) == "captioning"
    # a user map's `rules` source skips the shipped source entry, not the folders of either map
    user = tmp_path / "fix.yaml"
    user.write_text("sources:\n  textcaps: rules\nimages:\n  scans/: detection\n")
    typer = TaskTyper.from_spec(f"map:{user}")
    assert typer.type(sample("Is it?", "no", source="textcaps", image="ocr_vqa/images/1.jpg")).task == "ocr"
    assert typer.type(sample("Is it?", "no", source="textcaps", image="a/scans/1.jpg")).task == "detection"
    assert typer.type(sample("Is it?", "no", source="textcaps", image="a/b/1.jpg")).rule == "question"
    # nested folders: the longest match wins, whatever the order in the map
    user.write_text("images:\n  pages/: ocr\n  scans/pages/: detection\n  scans/: captioning\n")
    nested = TaskTyper.from_spec(f"map:{user}")
    folders = ("scans/pages", "scans", "pages")
    typed = [nested.task_of(sample(image=f"/d/{folder}/1.jpg")) for folder in folders]
    assert typed == ["detection", "captioning", "ocr"]


def test_bad_specs_and_maps_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MixAtlasError, match=r"expected 'auto', 'rules', 'field:NAME' or 'map:FILE\.yaml'"):
        TaskTyper.from_spec("magic")
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"coco": "segmentation"}))
    with pytest.raises(MixAtlasError, match="source 'coco' maps to unknown task 'segmentation'"):
        TaskTyper.from_spec(f"map:{bad}")
    bad.write_text("sources:\n  coco: rules:segmentation\n")
    with pytest.raises(MixAtlasError, match="unknown prior; use rules:TASK"):
        TaskTyper.from_spec(f"map:{bad}")
    bad.write_text("source:\n  coco: vqa\n")
    with pytest.raises(MixAtlasError, match="'source' holds a dict, not a task; the top-level keys are"):
        TaskTyper.from_spec(f"map:{bad}")
    with pytest.raises(MixAtlasError, match="cannot read the task map"):
        TaskTyper.from_spec(f"map:{tmp_path / 'missing.yaml'}")


# docs/task-typing.md, "Multi-turn samples": a tie goes to the more specific task, in this order.
DOCUMENTED_SPECIFICITY = ("grounding", "detection", "ocr", "captioning", "vqa")


def test_multi_turn_tie_goes_to_the_more_specific_task_in_either_turn_order() -> None:
    # one labelled English prompt per task that the rules type correctly on its own
    example = {}
    for row in labelled_rows():
        new = row["lang"] == "en" and row["task"] not in example
        if new and classify_turn(row["prompt"], row["answer"])[0] == row["task"]:
            example[row["task"]] = conversation(row["prompt"], row["answer"])
    assert set(example) == set(DOCUMENTED_SPECIFICITY)
    for i, specific in enumerate(DOCUMENTED_SPECIFICITY):
        for general in DOCUMENTED_SPECIFICITY[i + 1 :]:
            for turns in (example[specific] + example[general], example[general] + example[specific]):
                typing = type_conversation(turns)
                assert typing.task == specific, (specific, general, typing)
            # a real majority still beats specificity
            assert type_conversation(example[general] * 2 + example[specific]).task == general
