"""Raw corpus records -> `Sample`: conversation normalization, image-path confinement, duplicate ids.

One `RecordParser` serves one corpus file; every format's reader (see `mixatlas.corpus.readers.READERS`)
hands it the decoded record and the record's location, and gets a `Sample` back or a reject recorded.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from mixatlas.corpus.rejects import Rejects, located
from mixatlas.corpus.sample import GPT, HUMAN, IMAGE_PLACEHOLDER, Sample
from mixatlas.errors import MixAtlasError

_ROLE_TO_SPEAKER = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "assistant": GPT, "model": GPT, "bot": GPT}
_RECORD_FIELDS = {"id", "image", "conversations", "messages", "task", "meta"}
_OUTSIDE_FIX = "move the image into that folder, or pass --allow-outside-root if the corpus is trusted"


def normalize_conversations(value: Any) -> list[dict]:
    """LLaVA turns from `[{"from", "value"}]`, `[{"role", "content"}]` (content may be a list of
    parts) or a JSON string of either; `ValueError` naming what is wrong."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of turns")
    turns = []
    for number, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {number} is not an object")
        role = str(turn.get("from", turn.get("role", ""))).lower()
        if role == "system":
            continue
        speaker = _ROLE_TO_SPEAKER.get(role)
        if speaker is None:
            raise ValueError(f"turn {number} has speaker '{role}', expected human/gpt (or user/assistant)")
        text = turn.get("value", turn.get("content"))
        if isinstance(text, list):  # OpenAI-style parts
            text = "".join(
                IMAGE_PLACEHOLDER if part.get("type") == "image" else str(part.get("text", ""))
                for part in text
                if isinstance(part, dict)
            )
        if not isinstance(text, str):
            raise ValueError(f"turn {number} has no text value")
        turns.append({"from": speaker, "value": text})
    speakers = {turn["from"] for turn in turns}
    if speakers != {HUMAN, GPT}:
        raise ValueError("needs at least one human and one gpt turn")
    return turns


def inside(path: str, root: str) -> bool:
    """Whether normalized absolute `path` lies in the folder `root` (string test, no file access)."""
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path == root or path.startswith(prefix)


@lru_cache(maxsize=1 << 16)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def real_location(path: str) -> str:
    """Where `path` really is: the link target when the file is a symbolic link (one `lstat`), else its
    name in its folder's real path (resolved once per folder)."""
    if os.path.islink(path):
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    return os.path.join(_real_folder(folder), name)


class RecordParser:
    """Turns the raw records of one corpus file into `Sample`s, or rejects them.

    Args:
        file: the corpus file.
        default_source: a sample's source when the record names none (the file name without extension).
        source_field: record field holding the source, or None.
        image_root: folder relative image paths are resolved against (the corpus root); None: the file's.
        allow_outside_root: accept image paths that leave the root (`../x`, absolute paths elsewhere).
        rejects: where bad records go; None raises `MixAtlasError` at the first.
        seen_ids: the ids of the corpus so far (shared by the parsers of one corpus): a repeat is a reject.
    """

    def __init__(
        self,
        file: Path,
        default_source: str,
        *,
        source_field: str | None = None,
        image_root: Path | None = None,
        allow_outside_root: bool = False,
        rejects: Rejects | None = None,
        seen_ids: set[str] | None = None,
    ) -> None:
        self.file = file
        self.default_source = default_source
        self.source_field = source_field
        self.image_root = os.path.abspath(image_root if image_root is not None else file.parent)
        self.real_root = os.path.realpath(self.image_root)
        self.allow_outside_root = allow_outside_root
        self.rejects = rejects
        self.seen_ids = seen_ids if seen_ids is not None else set()

    def reject(self, where: int | str, reason: str) -> None:
        """Record one reject at `where` (raises `MixAtlasError` when there is no rejects list)."""
        if self.rejects is None:
            raise MixAtlasError(located(self.file, where, reason))
        self.rejects.add(self.file, where, reason)

    def image_path(self, value: Any) -> str | None:
        """Absolute path string for a record's `image` value; `ValueError(reason)` when it is unusable.

        Relative paths are read from the corpus root; a path that leaves the root is refused unless
        `allow_outside_root` (so a corpus cannot make `materialize` copy files from elsewhere).
        """
        if isinstance(value, list) and len(value) <= 1:
            value = value[0] if value else None
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ValueError(f"bad image field: expected a path string, got {type(value).__name__}")
        # A `Path.resolve()` per record costs more than the rest of the parse: the path is normalized as a
        # string, and symbolic links are followed with one lstat plus a per-folder cache.
        path = os.path.normpath(os.path.join(self.image_root, value))
        if self.allow_outside_root:
            return path
        if not inside(path, self.image_root):
            raise ValueError(f"image outside the corpus root: '{value}' is not under {self.image_root}; "
                             f"{_OUTSIDE_FIX}")
        real = real_location(path)
        if not inside(real, self.real_root):
            raise ValueError(f"image outside the corpus root: '{value}' is a link to {real}, not under "
                             f"{self.real_root}; {_OUTSIDE_FIX}")
        return path

    def json_sample(self, record: Any, where: int | str, offset: int) -> Sample | None:
        """A sample from a JSON record whose `image` is a file path."""
        if not isinstance(record, dict):
            self.reject(where, f"not an object: the record is a JSON {type(record).__name__}")
            return None
        try:
            image = self.image_path(record.get("image"))
        except ValueError as exc:
            self.reject(where, str(exc))
            return None
        return self.sample(record, image, where, offset)

    def sample(self, record: dict, image: str | None, where: int | str, offset: int) -> Sample | None:
        """A sample from a record whose image ref is already resolved (None: rejected)."""
        try:
            conversations = normalize_conversations(record.get("conversations", record.get("messages")))
        except ValueError as exc:
            self.reject(where, f"bad conversations: {exc}")
            return None
        sample_id = str(record.get("id") or f"{self.default_source}:{offset}")
        if sample_id in self.seen_ids:
            self.reject(where, f"duplicate id: '{sample_id}' is already the id of an earlier record; "
                               "give every record a unique id")
            return None
        self.seen_ids.add(sample_id)
        meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
        for key, value in record.items():
            if key not in _RECORD_FIELDS:
                meta.setdefault(key, value)
        source = self.default_source
        if self.source_field is not None and record.get(self.source_field) not in (None, ""):
            source = str(record[self.source_field])
        task = record.get("task")
        return Sample(
            id=sample_id,
            source=source,
            image=image,
            conversations=conversations,
            task=str(task) if task not in (None, "") else None,
            meta=meta,
            shard=str(self.file),
            offset=offset,
            where=where,
        )
