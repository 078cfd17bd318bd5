"""Task typing details the mutation run found untested: PaliGemma task prefixes (which head, the
referring-`detect` test, the 200-char and trailing-`?` limits), answer-shape thresholds, the uncached
path for long prompts, multi-turn / empty `Typing`s, source-map matching (globs, image folders,
Windows separators, ties), `--tasks` parsing and the one-line errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixatlas.atlas import task_rules
from mixatlas.atlas.task_rules import classify_turn
from mixatlas.atlas.tasks import (
    Entry,
    SourceMap,
    TaskTyper,
    Typing,
    count_boxes,
    load_source_map,
    parse_source_map,
    resolve_spec,
    type_conversation,
)
from mixatlas.corpus.sample import Sample
from mixatlas.errors import MixAtlasError

TASK_LIST = "captioning, ocr, grounding, detection, vqa"


@pytest.fixture(autouse=True)
def _fresh_decisions():
    # The (prompt, answer shape) decision cache is process-wide: start each test without earlier decisions.
    task_rules._classify.cache_clear()
    yield


def conversation(*turns: tuple[str, str]) -> list[dict]:
    out: list[dict] = []
    for prompt, answer in turns:
        out += [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]
    return out


def sample(prompt: str = "How many?", answer: str = "3", **fields) -> Sample:
    return Sample(id="s", source=fields.pop("source", "web"), image=fields.pop("image", None),
                  conversations=conversation((prompt, answer)), **fields)


# --- PaliGemma task prefixes -------------------------------------------------------------------------

@pytest.mark.parametrize(("prompt", "expected"), [
    ("caption en", ("captioning", "task-token")),
    ("describe en", ("captioning", "task-token")),
    ("caption", ("captioning", "task-token")),
    ("describe", ("captioning", "task-token")),
    ("ocr", ("ocr", "task-token")),
    ("ocr the sign", ("ocr", "task-token")),  # `ocr` with a rest still is the task prefix
    ("segment the left cup", ("grounding", "task-token")),  # not locate-intent
    ("segment", ("grounding", "task-token")),
    ("answer en what is this", ("vqa", "task-token")),
    ("answer", ("vqa", "task-token")),
    ("question en what is this", ("vqa", "task-token")),
    ("question", ("vqa", "task-token")),
    ("detect", ("detection", "task-token")),
    ("detect cat ; dog", ("detection", "task-token")),
    ("detect cat ; dog ; bird", ("detection", "task-token")),  # 3 words, but a `;` list of categories
    ("detect the red car, dog", ("detection", "task-token")),  # a `,` list of categories
    ("detect all the red cars", ("detection", "task-token")),  # referring length, but all-instance wording
    ("detect the red car", ("detection", "detect-intent")),  # 3 words: a referring expression
    ("detect the man in the red shirt", ("detection", "detect-intent")),
    ("answer what color", ("vqa", "question")),  # no language code and a rest: no prefix
    ("answer en what is this?", ("vqa", "question")),  # a question is no task prefix
])
def test_paligemma_prefixes(prompt, expected):
    assert classify_turn(prompt, "") == expected


def test_paligemma_prefix_only_in_short_prompts():
    assert classify_turn("caption en " + "x" * 188, "") == ("captioning", "task-token")  # 199 chars
    assert classify_turn("caption en " + "x" * 189, "") == ("captioning", "caption-intent")  # 200 chars


# --- answer shape ------------------------------------------------------------------------------------

def test_points_in_answer():
    assert classify_turn("Where is the dog?", "[0.41,0.57]") == ("grounding", "point-in-answer")
    assert classify_turn("Where is the dog?", "<point>12 30</point>") == ("grounding", "point-in-answer")


def test_long_answer_thresholds():
    exactly = " ".join(["abc"] * 39 + ["abcd"])  # 160 characters, 40 words
    assert len(exactly) == 160
    assert classify_turn("Please.", exactly) == ("captioning", "long-answer")
    assert classify_turn("Please.", exactly[:-1]) == ("vqa", "default")  # 159 characters
    few_words = " ".join(["abcdefghij"] * 39)  # 39 words, 428 characters
    assert classify_turn("Please.", few_words) == ("vqa", "default")


def test_box_count_needs_digits():
    assert count_boxes('{"bbox": [left, top, right, bottom]}') == 0  # no digits: no box
    assert count_boxes('{"bbox": [1, 2, 3, 4]}') == 1


def test_long_prompts_are_typed_uncached():
    long_prompt = "What color is the car on the left side of the street? " * 20
    assert len(long_prompt.strip()) > task_rules.CACHED_PROMPT_CHARS
    assert classify_turn(long_prompt, "red") == ("vqa", "question")
    assert classify_turn("Locate the car. " * 70, "[1, 2, 3, 4]") == ("grounding", "box-in-answer")


# --- multi-turn / empty -------------------------------------------------------------------------------

def test_type_conversation_shapes():
    assert type_conversation([]) == Typing("vqa", "default", "")
    assert type_conversation(conversation(("Describe the image.", "A dog."))) == \
        Typing("captioning", "caption-intent", "captioning:1")
    two = conversation(("What is written on the sign?", "STOP"), ("How many dogs?", "2"))
    assert type_conversation(two) == Typing("ocr", "ocr-intent", "ocr:1 vqa:1")


# --- source maps ---------------------------------------------------------------------------------------

def test_glob_with_every_wildcard_kind():
    source_map = parse_source_map({"shard[12]?_*": "ocr"}, "m.yaml", "map")
    assert source_map.by_source("Shard1a_train") == Entry("ocr", None, "map:source:shard[12]?_*")
    assert source_map.by_source("shard3a_train") is None


def test_image_folders():
    source_map = parse_source_map({"images": {"/coco/": "vqa", "coco/sub/": "ocr"}}, "m.yaml", "map")
    assert source_map.by_image("/data/coco/train/1.jpg").name == "map:image:/coco/"
    assert source_map.by_image("/data/COCO/sub/1.jpg").task == "ocr"  # the longest match
    assert source_map.by_image("C:\\data\\coco/1.jpg").task == "vqa"  # Windows separators
    assert source_map.by_image("/data/other/1.jpg") is None
    tie = parse_source_map({"images": {"a/": "ocr", "b/": "vqa"}}, "m.yaml", "map")
    assert tie.by_image("/x/a/b/1.jpg").task == "ocr"  # equal lengths: the first listed


def test_map_errors_name_the_map():
    cases = [
        ([1], "m.yaml: expected a mapping with 'sources:' and/or 'images:' (or flat 'source: task' lines)"),
        ({"sources": {}, "foo": 1}, "m.yaml: unknown key(s) ['foo']; use sources:, images:, shipped:"),
        ({"images": [1]}, "m.yaml: 'images:' must be a mapping of 'name: task' lines"),
        ({"shipped": "yes"}, "m.yaml: 'shipped:' must be true or false"),
        ({"a": "rules:xyz"},
         f"m.yaml: 'a' -> 'rules:xyz': unknown prior; use rules:TASK with a task in {TASK_LIST}"),
        ({"a": "xyz"},
         f"m.yaml: source 'a' maps to unknown task 'xyz'; use one of: {TASK_LIST}, rules, rules:TASK"),
    ]
    for data, message in cases:
        with pytest.raises(MixAtlasError) as info:
            parse_source_map(data, "m.yaml", "map")
        assert str(info.value) == message


def test_load_source_map_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1\nb: 2\n", encoding="utf-8")
    with pytest.raises(MixAtlasError) as info:
        load_source_map(bad)
    assert str(info.value) == (f"{bad}: invalid YAML (while parsing a flow sequence); "
                               "write 'source: task' lines")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("web: nonsense\n", encoding="utf-8")
    with pytest.raises(MixAtlasError) as info:
        load_source_map(wrong)
    assert str(info.value) == (f"{wrong}: source 'web' maps to unknown task 'nonsense'; use one of: "
                               f"{TASK_LIST}, rules, rules:TASK")
    with pytest.raises(MixAtlasError) as info:
        load_source_map(wrong, "x")  # where= is the path, whatever the prefix
    assert str(info.value).startswith(f"{wrong}: ")


# --- --tasks specs and TaskTyper.type -----------------------------------------------------------------

def test_typing_levels_give_empty_mix(tmp_path):
    typer = TaskTyper.from_spec("field:kind")
    assert typer.type(sample(task="OCR")) == Typing("ocr", "explicit", "")
    assert typer.type(sample(meta={"kind": "det"})) == Typing("detection", "field:kind", "")
    assert typer.type(sample(source="detail_23k")) == Typing("captioning", "known:source:detail_23k", "")
    fix = tmp_path / "fix.yaml"
    fix.write_text("web: rules:ocr\n", encoding="utf-8")
    prior = TaskTyper.from_spec(f"map:{fix}").type(sample("How many?", "3"))
    assert prior == Typing("ocr", "map:source:web:prior", "vqa:1")


def test_field_source_and_task(tmp_path):
    assert TaskTyper.from_spec("field:source").type(sample(source="ocr")) == Typing("ocr", "field:source", "")
    # `task` is the sample's attribute, never a meta key of that name
    assert TaskTyper.from_spec("field:task").type(sample(meta={"task": "ocr"})).rule == "question"


def test_spec_parts(tmp_path):
    typer = TaskTyper.from_spec("field:kind, rules")
    assert typer.type(sample(meta={"kind": "ocr"})) == Typing("ocr", "field:kind", "")
    known = TaskTyper.from_spec("rules,auto").type(sample(source="detail_23k"))
    assert known.rule == "known:source:detail_23k"
    assert TaskTyper.from_spec("rules").type(sample(source="detail_23k")).rule == "question"
    colon = tmp_path / "a:b.yaml"
    colon.write_text("web: ocr\n", encoding="utf-8")
    assert TaskTyper.from_spec(f"map:{colon}").type(sample()) == Typing("ocr", "map:source:web", "")
    with pytest.raises(MixAtlasError) as info:
        TaskTyper.from_spec("bogus:x")
    assert str(info.value) == ("--tasks 'bogus:x': expected 'auto', 'rules', 'field:NAME' or 'map:FILE.yaml' "
                               "(comma-joined parts combine)")


def test_resolve_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_spec("rules, map:fix.yaml") == f"rules,map:{Path(tmp_path / 'fix.yaml').resolve()}"
    assert resolve_spec("auto") == "auto"


def test_source_map_keys_are_normalised():
    source_map = SourceMap({}, {"/coco/": Entry("vqa", None, "n")})
    assert list(source_map.images) == ["/coco/"]


def test_image_folder_case_is_folded_after_trimming_slashes():
    source_map = parse_source_map({"images": {"XRay/": "ocr"}}, "m.yaml", "map")
    assert source_map.by_image("/data/xray/1.jpg").name == "map:image:XRay/"
    assert source_map.by_image("XRay/img/1.jpg").task == "ocr"
