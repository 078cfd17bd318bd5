"""Task typing: rules on hand-written prompts in public-dataset styles, precedence, synthetic agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixatlas.atlas.tasks import TaskTyper, classify_conversation, count_boxes
from mixatlas.corpus.readers import read_corpus
from mixatlas.corpus.sample import Sample
from mixatlas.corpus.synth import BENCHMARKS
from mixatlas.errors import MixAtlasError

# (prompt, answer, expected task), in the styles of the datasets named in the comments.
PROMPTS = [
    # COCO captions
    ("Describe this image.", "A man riding a wave on top of a surfboard.", "captioning"),
    ("Provide a one-sentence caption for the provided image.", "Two dogs play with a frisbee.", "captioning"),
    ("Write a short caption for this photo.", "A plate of food with broccoli and rice.", "captioning"),
    ("Summarize the visual content of the image.", "A busy street with buses and people.", "captioning"),
    ("What is happening here? Describe it briefly.", "Children play soccer on a field.", "captioning"),
    ("Give a brief description of the image.", "A kitchen with a stove and a window.", "captioning"),
    ("A short image caption:", "A cat sleeping on a laptop keyboard.", "captioning"),
    ("What do you see in this image?", "A red double-decker bus parked by the curb.", "captioning"),
    # TextCaps
    (
        "Briefly describe the image, including any text you can see.",
        "A Coca-Cola bottle on a table.",
        "captioning",
    ),
    (
        "Provide a caption for the image that mentions the visible text.",
        "A sign that reads Joe's Pizza.",
        "captioning",
    ),
    # TextVQA / OCR
    ("What does the sign say?", "stop", "ocr"),
    ("What is written on the side of the bus?", "city tours", "ocr"),
    ("What is the text on the shirt?", "nike", "ocr"),
    ("Read the license plate number.", "ABC 1234", "ocr"),
    ("What number is written on the jersey?", "23", "ocr"),
    ("What are the letters on the tail of the plane?", "KLM", "ocr"),
    ("Transcribe the handwritten note.", "Meet me at noon", "ocr"),
    ("OCR the receipt.", "Total 12.50", "ocr"),
    ("Extract the text from this document.", "Dear Sir, ...", "ocr"),
    ("What brand name is printed on the mug?", "Starbucks", "ocr"),
    # RefCOCO / grounding
    (
        "Please provide the bounding box coordinate of the region this sentence describes: man in red shirt.",
        "[0.12, 0.30, 0.45, 0.98]",
        "grounding",
    ),
    ("man on the left", "[12, 40, 300, 500]", "grounding"),
    (
        "Where is the giraffe closest to the camera? Answer with coordinates.",
        "[0.5, 0.2, 0.9, 0.95]",
        "grounding",
    ),
    ("Locate the white cup next to the laptop.", "(112,305),(230,410)", "grounding"),
    ("Find the woman holding an umbrella.", "[345, 120, 512, 600]", "grounding"),
    ("<ref>the black dog</ref>", "<box>(10,20),(200,300)</box>", "grounding"),
    ("Give the bounding box of the left zebra.", "<loc0100><loc0200><loc0500><loc0600>", "grounding"),
    # COCO / Objects365 detection
    (
        "Detect all objects in the image.",
        "person [0.1, 0.2, 0.3, 0.9]; dog [0.5, 0.6, 0.8, 0.9]",
        "detection",
    ),
    (
        "Find all the cars and provide their boxes.",
        "car [10, 20, 100, 90]; car [200, 30, 300, 110]",
        "detection",
    ),
    ("List every person with their bounding box.", "person [5, 5, 50, 90]", "detection"),
    ("Output the locations of the chairs.", "chair: [1, 2, 3, 4], chair: [5, 6, 7, 8]", "detection"),
    (
        "Identify each animal and give its box.",
        "cat [0.1, 0.1, 0.4, 0.5]\ndog [0.5, 0.5, 0.9, 0.9]",
        "detection",
    ),
    (
        "What is on the table? Give boxes.",
        "cup [1, 1, 9, 9]; plate [20, 20, 60, 60]; fork [7, 0, 9, 30]",
        "detection",
    ),
    # VQAv2 / GQA
    ("What color is the umbrella?\nAnswer the question using a single word or phrase.", "red", "vqa"),
    ("How many people are in the photo?", "3", "vqa"),
    ("Is the man wearing a hat?", "yes", "vqa"),
    ("What is the woman holding?", "a racket", "vqa"),
    ("Which side of the picture is the bicycle on?", "left", "vqa"),
    ("Is the table made of wood or metal? Answer with a single word.", "wood", "vqa"),
    ("What animal is depicted?", "horse", "vqa"),
    # ChartQA / DocVQA
    ("What is the value of the blue bar in 2015?", "42", "vqa"),
    ("Which year has the highest revenue?", "2019", "vqa"),
    ("What is the difference between the highest and lowest values?", "17", "vqa"),
    ("What is the date of the invoice?", "March 3, 2020", "vqa"),
    ("Who is the sender of the letter?", "John Smith", "vqa"),
    ("What letter is on the wooden block?", "B", "ocr"),
    ("What is the total amount due?", "$1,250", "vqa"),
    ("What is shown on the y-axis?", "percentage", "vqa"),
    ("What percentage of respondents said yes?", "54%", "vqa"),
]


def conversation(prompt: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]


def sample(prompt: str = "How many?", answer: str = "3", **fields) -> Sample:
    return Sample(
        id="s",
        source=fields.pop("source", "web"),
        image=None,
        conversations=conversation(prompt, answer),
        **fields,
    )


def test_prompt_set_covers_every_task() -> None:
    assert len(PROMPTS) >= 40
    assert {task for _, _, task in PROMPTS} == {"captioning", "ocr", "grounding", "detection", "vqa"}


@pytest.mark.parametrize(("prompt", "answer", "expected"), PROMPTS)
def test_rules_on_hand_written_prompts(prompt: str, answer: str, expected: str) -> None:
    assert classify_conversation(conversation(prompt, answer)) == expected


def test_multi_turn_takes_the_most_common_task() -> None:
    turns = conversation("What color is the car?", "red") + conversation("What does the sign say?", "stop")
    turns += conversation("How many wheels?", "4")
    assert classify_conversation(turns) == "vqa"
    assert classify_conversation(turns[:0]) == "vqa"
    assert count_boxes("a [1, 2, 3, 4] b [0.1,0.2,0.3,0.4] (1,2),(3,4) <loc1><loc2><loc3><loc4>") == 4


def test_agreement_with_meta_task_on_the_synthetic_corpus(synth_corpus: Path) -> None:
    files = [synth_corpus / "train.jsonl"] + [synth_corpus / "eval" / f"{name}.jsonl" for name in BENCHMARKS]
    typer = TaskTyper.from_spec("rules")
    samples = list(read_corpus(files))
    agree = sum(typer.task_of(s) == s.meta["task"] for s in samples)
    assert len(samples) == 600 + 20 * len(BENCHMARKS)
    assert agree / len(samples) >= 0.98


def test_precedence_explicit_then_field_then_map_then_rules(tmp_path: Path) -> None:
    task_map = tmp_path / "tasks.yaml"
    task_map.write_text("textcaps: caption\n'refcoco*': grounding\nocrvqa: ocr\n")
    by_map = TaskTyper.from_spec(f"map:{task_map}")
    assert by_map.task_of(sample(source="textcaps")) == "captioning"
    assert by_map.task_of(sample(source="refcoco_plus")) == "grounding"
    assert by_map.task_of(sample(source="ocrvqa", task="VQA")) == "vqa"  # explicit task wins
    assert by_map.task_of(sample(source="other")) == "vqa"  # rules
    assert (
        by_map.task_of(sample(source="textcaps", task="chat")) == "captioning"
    )  # unknown label falls through

    by_field = TaskTyper.from_spec("field:meta_info.kind")
    assert by_field.task_of(sample(meta={"meta_info": {"kind": "det"}})) == "detection"
    assert by_field.task_of(sample("Read the sign.", "stop", meta={})) == "ocr"
    assert (
        TaskTyper.from_spec("field:kind").task_of(sample(meta={"kind": "ocr"}, task="caption"))
        == "captioning"
    )


def test_bad_specs_and_maps_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MixAtlasError, match=r"expected 'rules', 'field:NAME' or 'map:FILE\.yaml'"):
        TaskTyper.from_spec("magic")
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"coco": "segmentation"}))
    with pytest.raises(MixAtlasError, match="source 'coco' maps to unknown task 'segmentation'"):
        TaskTyper.from_spec(f"map:{bad}")
    with pytest.raises(MixAtlasError, match="cannot read the task map"):
        TaskTyper.from_spec(f"map:{tmp_path / 'missing.yaml'}")
