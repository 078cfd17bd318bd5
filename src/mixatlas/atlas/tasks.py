"""Task typing: give every sample one of the five task types (captioning, OCR, grounding, detection, VQA).

Precedence: an explicit task (`Sample.task`, or the field named by `field:NAME`), then a source -> task
map (`map:FILE.yaml`), then rules on the conversation text (`classify_conversation`):

1. box coordinates in an answer -> detection when there are several boxes or the prompt asks for
   all/every/each object (or says detect), else grounding (one referred object);
2. explicit reading prompts (read, transcribe, OCR, "what is written", "what does ... say") -> OCR;
3. describe / caption / summarize prompts -> captioning;
4. weaker text cues (text, words, letters, characters in the image) -> OCR;
5. otherwise VQA.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from pathlib import Path
from typing import Any

from mixatlas.corpus.sample import TASKS, Sample, strip_placeholder, turn_pairs
from mixatlas.errors import MixAtlasError

# Names datasets use for our five tasks.
TASK_ALIASES = {
    "caption": "captioning",
    "captions": "captioning",
    "captioning": "captioning",
    "description": "captioning",
    "ocr": "ocr",
    "text": "ocr",
    "grounding": "grounding",
    "referring": "grounding",
    "ref": "grounding",
    "rec": "grounding",
    "detection": "detection",
    "det": "detection",
    "vqa": "vqa",
    "qa": "vqa",
}

_NUM = r"-?\d+(?:\.\d+)?"
_BOXES = (
    re.compile(rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]"),  # [x1, y1, x2, y2]
    re.compile(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,?\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)"),  # (x1,y1),(x2,y2)
    re.compile(r"(?:<loc_?\d+>\s*){4}"),  # PaliGemma / Florence location tokens
)
_DETECTION_CUE = re.compile(
    r"\b(detect\w*|all|every|each|list|bounding boxes|boxes|objects|instances)\b", re.IGNORECASE
)
_OCR_STRONG = re.compile(
    r"\b(ocr|transcri\w+|read|reading|written|handwrit\w*|spell\w*|extract\w* (the |all |any )?text)\b"
    r"|\bwhat (does|do) (the|this|that|these|it)\b[^?]{0,40}\bsay\b",
    re.IGNORECASE,
)
_CAPTION = re.compile(
    r"\b(describe|description|caption\w*|summar\w+|narrate)\b"
    r"|\bwhat (is|are) (shown|depicted|happening) in (the|this) (image|picture|photo)\b"
    r"|\bwhat do you see\b",
    re.IGNORECASE,
)
# "word" alone is not a cue ("Answer using a single word or phrase" closes most VQA prompts), nor is
# "letter" (DocVQA asks about letters as documents).
_OCR_WEAK = re.compile(
    r"\b(text|texts|letters|characters?|lettering|inscription)\b|\bletter (is |are )?(in|on)\b"
    r"|\bwords? (in|on|of|shown|visible|printed)\b|\bprinted on\b",
    re.IGNORECASE,
)


def count_boxes(text: str) -> int:
    """Number of box coordinates in `text` (`[x1, y1, x2, y2]`, `(x1,y1),(x2,y2)` or 4 `<loc>` tokens)."""
    return sum(len(pattern.findall(text)) for pattern in _BOXES)


def classify_turn(prompt: str, answer: str) -> str:
    """The task of one (human prompt, gpt answer) pair by the rules in the module docstring."""
    prompt = strip_placeholder(prompt)
    boxes = count_boxes(answer)
    if boxes:
        return "detection" if boxes > 1 or _DETECTION_CUE.search(prompt) else "grounding"
    if _OCR_STRONG.search(prompt):
        return "ocr"
    if _CAPTION.search(prompt):
        return "captioning"
    if _OCR_WEAK.search(prompt):
        return "ocr"
    return "vqa"


def classify_conversation(conversations: list[dict]) -> str:
    """The task of a LLaVA conversation: the most common task over its (human, gpt) turns (ties go to
    the earliest); a conversation with no human turn is VQA."""
    tasks = [classify_turn(prompt, answer) for prompt, answer in turn_pairs(conversations)]
    if not tasks:
        return "vqa"
    counts = Counter(tasks)
    return max(tasks, key=lambda task: (counts[task], -tasks.index(task)))


def normalize_task(value: Any) -> str | None:
    """One of `TASKS` for a dataset's task label (`"caption"`, `"REC"`, `"VQA"`...), else None."""
    if value is None:
        return None
    return TASK_ALIASES.get(str(value).strip().lower())


class TaskTyper:
    """Assigns a task to each sample: explicit task / field, then source map, then rules.

    Build it with `from_spec("rules" | "field:NAME" | "map:FILE.yaml")`. An explicit label that names
    no known task falls through to the next level.
    """

    def __init__(self, field: str | None = None, source_map: dict[str, str] | None = None) -> None:
        self.field = field
        self.source_map = dict(source_map or {})
        self._patterns = [(pattern, task) for pattern, task in self.source_map.items() if _is_glob(pattern)]

    @classmethod
    def from_spec(cls, spec: str) -> TaskTyper:
        """Parse a `--tasks` value."""
        kind, _, arg = spec.partition(":")
        if spec == "rules":
            return cls()
        if kind == "field" and arg:
            return cls(field=arg)
        if kind == "map" and arg:
            return cls(source_map=load_source_map(Path(arg)))
        raise MixAtlasError(f"--tasks {spec!r}: expected 'rules', 'field:NAME' or 'map:FILE.yaml'")

    def task_of(self, sample: Sample) -> str:
        """The task of `sample` (always one of `TASKS`)."""
        task = normalize_task(sample.task)
        if task is None and self.field is not None:
            task = normalize_task(_field_value(sample, self.field))
        if task is None and self.source_map:
            task = self._mapped(sample.source)
        return task or classify_conversation(sample.conversations)

    def _mapped(self, source: str) -> str | None:
        if source in self.source_map:
            return self.source_map[source]
        return next((task for pattern, task in self._patterns if fnmatch.fnmatchcase(source, pattern)), None)


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _field_value(sample: Sample, name: str) -> Any:
    """`name` looked up in the sample's meta (dots walk into nested dicts; `task`/`source` are fields)."""
    if name in ("task", "source"):
        return getattr(sample, name)
    value: Any = sample.meta
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def load_source_map(path: Path) -> dict[str, str]:
    """Read a YAML mapping `{source name or glob: task}`; `MixAtlasError` names a bad entry."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MixAtlasError(f"{path}: cannot read the task map ({exc}); check --tasks map:FILE") from exc
    except yaml.YAMLError as exc:
        raise MixAtlasError(f"{path}: invalid YAML ({exc}); write 'source: task' lines") from exc
    if not isinstance(data, dict):
        raise MixAtlasError(f"{path}: expected a mapping of 'source: task' lines")
    mapping = {}
    for source, label in data.items():
        task = normalize_task(label)
        if task is None:
            raise MixAtlasError(
                f"{path}: source {source!r} maps to unknown task {label!r}; use one of: {', '.join(TASKS)}"
            )
        mapping[str(source)] = task
    return mapping
