"""Task typing: give every sample one of the five task types (captioning, OCR, grounding, detection, VQA),
the rule that decided it, and the per-turn task mix.

Precedence (docs/task-typing.md): an explicit task (the record's `task`, then the field named by
`field:NAME`), then source maps (a user map from `map:FILE.yaml`, then the shipped map of known corpora,
`known_sources.yaml`), then the rules of `task_rules` on each (prompt, answer) turn. A map entry may say
`rules` (the source hosts several tasks: a source entry passes on to the maps' image folders, then the
rules) or `rules:TASK` (rules, but TASK instead of a low-confidence guess). A multi-turn sample takes
the task of most of its turns; a tie goes to the more specific task in the order grounding, detection,
OCR, captioning, VQA.

`--tasks` specs: `auto` (default: explicit > shipped map > rules), `rules` (explicit > rules),
`map:FILE.yaml` (explicit > FILE > shipped map > rules), `field:NAME` (explicit > field > shipped map >
rules); parts combine with commas (`field:kind,map:fix.yaml`).
"""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mixatlas.atlas.task_rules import LOW_CONFIDENCE_RULES, classify_turn, count_boxes
from mixatlas.corpus.sample import TASKS, Sample, turn_pairs
from mixatlas.errors import MixAtlasError

__all__ = ["TYPING_VERSION", "TaskTyper", "Typing", "classify_conversation", "count_boxes", "load_source_map",
           "normalize_task", "resolve_spec", "type_conversation"]

# Names datasets use for our five tasks.
TASK_ALIASES = {
    "caption": "captioning", "captions": "captioning", "captioning": "captioning",
    "description": "captioning",
    "ocr": "ocr", "text": "ocr", "grounding": "grounding", "referring": "grounding", "ref": "grounding",
    "rec": "grounding", "reg": "grounding", "detection": "detection", "det": "detection", "vqa": "vqa",
    "qa": "vqa",
}
# Tie order for multi-turn samples: the more specific task wins (VQA is the catch-all).
SPECIFICITY = ("grounding", "detection", "ocr", "captioning", "vqa")
# Rule decisions a map's `rules:TASK` prior replaces: guesses, and plain questions with no task cue.
PRIOR_YIELDS_TO = LOW_CONFIDENCE_RULES | {"question"}
SHIPPED_MAP = "known_sources.yaml"
# Bumped when the rules change what they decide: part of the embedding cache key, so a resumed build
# never mixes rows typed by two versions of the rules.
TYPING_VERSION = 3


@dataclass(frozen=True)
class Typing:
    """A sample's task, the rule that decided it, and its per-turn mix (`"vqa:3 ocr:1"`)."""

    task: str
    rule: str
    mix: str


def _mix(tasks: list[str]) -> str:
    return " ".join(f"{task}:{count}" for task, count in Counter(tasks).most_common())


def type_conversation(conversations: list[dict]) -> Typing:
    """Type each (human, gpt) turn by rules; the sample's task is the most common turn task (ties go
    to the more specific task, `SPECIFICITY`); its rule is that of the first turn with that task."""
    typed = [classify_turn(prompt, answer) for prompt, answer in turn_pairs(conversations)]
    if not typed:
        return Typing("vqa", "default", "")
    if len(typed) == 1:
        return Typing(typed[0][0], typed[0][1], f"{typed[0][0]}:1")
    tasks = [task for task, _ in typed]
    counts = Counter(tasks)
    task = min(counts, key=lambda t: (-counts[t], SPECIFICITY.index(t)))
    rule = next(rule for t, rule in typed if t == task)
    return Typing(task, rule, _mix(tasks))


def classify_conversation(conversations: list[dict]) -> str:
    """The task of a LLaVA conversation by rules (see `type_conversation`)."""
    return type_conversation(conversations).task


def normalize_task(value: Any) -> str | None:
    """One of `TASKS` for a dataset's task label (`"caption"`, `"REC"`, `"VQA"`...), else None."""
    if value is None:
        return None
    return TASK_ALIASES.get(str(value).strip().lower())


@dataclass(frozen=True)
class Entry:
    """One map entry: `task` (one of TASKS) or None for `rules`; `prior` the task a `rules:TASK` entry
    puts in place of a low-confidence rule decision; `name` says where it came from (for `task_rule`)."""

    task: str | None
    prior: str | None
    name: str


class SourceMap:
    """Source -> task entries: `sources` match the sample's source name (globs, case-insensitive),
    `images` match a folder in its image path (`coco/` matches `/data/coco/train2017/1.jpg`)."""

    def __init__(self, sources: dict[str, Entry], images: dict[str, Entry], use_shipped: bool = True) -> None:
        self.sources = {key.lower(): entry for key, entry in sources.items()}
        self.images = {"/" + key.strip("/").lower() + "/": entry for key, entry in images.items()}
        self.globs = [(key, entry) for key, entry in self.sources.items() if any(c in key for c in "*?[")]
        self.use_shipped = use_shipped
        self._by_source: dict[str, Entry | None] = {}
        self._by_folder: dict[str, Entry | None] = {}

    def by_source(self, source: str) -> Entry | None:
        """The entry for the sample's source name (exact, then globs); None if none matches."""
        key = source.lower()
        if key not in self._by_source:
            entry = self.sources.get(key)
            if entry is None:
                entry = next((e for pattern, e in self.globs if fnmatch.fnmatchcase(key, pattern)), None)
            self._by_source[key] = entry
        return self._by_source[key]

    def by_image(self, image: str | None) -> Entry | None:
        """The entry for a folder in the sample's image path (the longest match: `coco/sub/` before
        `coco/`); None if none matches."""
        if not image or not self.images:
            return None
        folder = os.path.dirname(image)
        if folder not in self._by_folder:
            path = "/" + folder.replace("\\", "/").strip("/").lower() + "/"
            matches = [(len(key), e) for key, e in self.images.items() if key in path]
            self._by_folder[folder] = max(matches, key=lambda match: match[0])[1] if matches else None
        return self._by_folder[folder]


def _entry(value: Any, name: str, where: str) -> Entry:
    if isinstance(value, (dict, list)):
        raise MixAtlasError(f"{where}: {name!r} holds a {type(value).__name__}, not a task; the top-level "
                            "keys are sources:, images:, shipped: (or flat 'source: task' lines)")
    text = str(value).strip().lower()
    head, _, prior = text.partition(":")
    if head == "rules":
        task = normalize_task(prior) if prior else None
        if prior and task is None:
            raise MixAtlasError(f"{where}: {name!r} -> {value!r}: unknown prior; use rules:TASK with a task "
                                f"in {', '.join(TASKS)}")
        return Entry(None, task, name)
    task = normalize_task(text)
    if task is None:
        raise MixAtlasError(f"{where}: source {name!r} maps to unknown task {value!r}; use one of: "
                            f"{', '.join(TASKS)}, rules, rules:TASK")
    return Entry(task, None, name)


def parse_source_map(data: Any, where: str, prefix: str) -> SourceMap:
    """A `SourceMap` from parsed YAML: `{sources: {...}, images: {...}, shipped: bool}` or a flat
    `{source: task}` mapping; `prefix` names the map in each entry (`map`, `known`)."""
    if not isinstance(data, dict):
        raise MixAtlasError(f"{where}: expected a mapping with 'sources:' and/or 'images:' "
                            "(or flat 'source: task' lines)")
    sections = {"sources", "images", "shipped"}
    if not sections & set(data):
        data = {"sources": data}
    unknown = set(data) - sections
    if unknown:
        raise MixAtlasError(f"{where}: unknown key(s) {sorted(unknown)}; use sources:, images:, shipped:")
    parsed: dict[str, dict[str, Entry]] = {}
    for section in ("sources", "images"):
        block = data.get(section) or {}
        if not isinstance(block, dict):
            raise MixAtlasError(f"{where}: '{section}:' must be a mapping of 'name: task' lines")
        parsed[section] = {str(key): _entry(value, str(key), where) for key, value in block.items()}
        parsed[section] = {key: Entry(e.task, e.prior, f"{prefix}:{section[:-1]}:{key}")
                           for key, e in parsed[section].items()}
    shipped = data.get("shipped", True)
    if not isinstance(shipped, bool):
        raise MixAtlasError(f"{where}: 'shipped:' must be true or false")
    return SourceMap(parsed["sources"], parsed["images"], shipped)


def load_source_map(path: Path, prefix: str = "map") -> SourceMap:
    """Read a YAML task map; `MixAtlasError` names a bad entry and the fix."""
    import yaml

    from mixatlas.yaml_io import safe_load

    try:
        data = safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MixAtlasError(f"{path}: cannot read the task map ({exc}); check --tasks map:FILE") from exc
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise MixAtlasError(f"{path}: invalid YAML ({problem}); write 'source: task' lines") from None
    return parse_source_map(data, str(path), prefix)


def shipped_source_map() -> SourceMap:
    """The map of known corpora shipped with the package (`atlas/known_sources.yaml`)."""
    from mixatlas.yaml_io import safe_load

    text = resources.files("mixatlas.atlas").joinpath(SHIPPED_MAP).read_text(encoding="utf-8")
    return parse_source_map(safe_load(text), SHIPPED_MAP, "known")


class TaskTyper:
    """Types samples: explicit task / field, then source maps (user, shipped), then rules.

    Build it with `from_spec` (`auto`, `rules`, `field:NAME`, `map:FILE.yaml`, or comma-joined parts).
    An explicit label that names no known task falls through to the next level.
    """

    def __init__(self, field: str | None = None, maps: list[SourceMap] | None = None) -> None:
        self.field = field
        self.maps = list(maps or [])

    @classmethod
    def from_spec(cls, spec: str) -> TaskTyper:
        """Parse a `--tasks` value (comma-joined parts; several `map:` parts apply in the order given)."""
        field, user_maps, shipped = None, [], False
        for part in (p.strip() for p in spec.split(",")):
            kind, _, arg = part.partition(":")
            if part == "rules":
                continue
            if part == "auto":
                shipped = True
            elif kind == "field" and arg:
                field, shipped = arg, True
            elif kind == "map" and arg:
                user_maps.append(load_source_map(Path(arg)))
            else:
                raise MixAtlasError(f"--tasks {spec!r}: expected 'auto', 'rules', 'field:NAME' or "
                                    "'map:FILE.yaml' (comma-joined parts combine)")
        if user_maps:
            shipped = all(source_map.use_shipped for source_map in user_maps)
        return cls(field=field, maps=user_maps + ([shipped_source_map()] if shipped else []))

    def type(self, sample: Sample) -> Typing:
        """Task, deciding rule and per-turn mix of `sample`."""
        task = normalize_task(sample.task)
        if task is not None:
            return Typing(task, "explicit", "")
        if self.field is not None:
            task = normalize_task(_field_value(sample, self.field))
            if task is not None:
                return Typing(task, f"field:{self.field}", "")
        prior: Entry | None = None
        source_said_rules = False
        for source_map in self.maps:
            entry = None if source_said_rules else source_map.by_source(sample.source)
            if entry is not None and entry.task is None and entry.prior is None:
                # a plain `rules` source hosts several tasks (a mix file): its image folders may still say
                source_said_rules, entry = True, None
            if entry is None:
                entry = source_map.by_image(sample.image)
            if entry is None:
                continue
            if entry.task is not None:
                return Typing(entry.task, entry.name, "")
            prior = entry if entry.prior is not None else None
            break
        typing = type_conversation(sample.conversations)
        if prior is not None and typing.rule in PRIOR_YIELDS_TO:
            return Typing(str(prior.prior), f"{prior.name}:prior", typing.mix)
        return typing

    def task_of(self, sample: Sample) -> str:
        """The task of `sample` (always one of `TASKS`)."""
        return self.type(sample).task


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


def resolve_spec(spec: str) -> str:
    """`spec` with every `map:FILE` made absolute, so `atlas assign` applies the same typing from anywhere."""
    parts = []
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("map:"):
            part = "map:" + str(Path(part[4:]).expanduser().resolve())
        parts.append(part)
    return ",".join(parts)
