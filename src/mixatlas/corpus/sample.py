"""The `Sample` record every reader yields: one image + instruction conversation from a corpus."""

from __future__ import annotations

from dataclasses import dataclass, field

TASKS = ("captioning", "ocr", "grounding", "detection", "vqa")
IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT = "human", "gpt"


@dataclass
class Sample:
    """One training example.

    Attributes:
        id: unique id within the corpus (the record's `id`, else `FILE_STEM:OFFSET`).
        source: where it comes from (file/shard stem by default, or the value of `--source-field`).
        image: an image ref: an absolute file path, `"TAR_PATH::MEMBER"` (WebDataset) or
            `"PARQUET_PATH::ROW"` (image bytes in Parquet); None for text-only records.
        conversations: LLaVA turns `[{"from": "human"|"gpt", "value": str}, ...]`.
        task: the task given by the data (its `task` field), if any.
        meta: the record's `meta` dict plus its other top-level fields (never read by decomposition
            unless asked with `--tasks field:NAME`).
        shard: the file the record came from; offset: its position there: the 1-based line (JSONL), the
            0-based element index (JSON array), row (Parquet) or first member index (WebDataset).
        where: the record's location as rejects report it: the line number (JSONL), or text such as
            `element 12 (byte 3456, line 80)`, `row 300 (row group 1, index 44)`, `member s/003.png`.
    """

    id: str
    source: str
    image: str | None
    conversations: list[dict]
    task: str | None = None
    meta: dict = field(default_factory=dict)
    shard: str = ""
    offset: int = 0
    where: int | str = 0

    def turns(self) -> list[tuple[str, str]]:
        """(human text, gpt answer) pairs in order (see `turn_pairs`)."""
        return turn_pairs(self.conversations)

    @property
    def prompt(self) -> str:
        """The first human turn, `<image>` placeholder stripped."""
        pairs = self.turns()
        return pairs[0][0] if pairs else ""

    @property
    def answer(self) -> str:
        """The gpt answer to the first human turn."""
        pairs = self.turns()
        return pairs[0][1] if pairs else ""


def turn_pairs(conversations: list[dict]) -> list[tuple[str, str]]:
    """(human text, gpt answer) pairs of LLaVA turns, `<image>` stripped; consecutive gpt turns are
    joined, a trailing question gets the answer ""."""
    pairs: list[tuple[str, str]] = []
    for turn in conversations:
        text = str(turn.get("value", ""))
        if turn.get("from") == HUMAN:
            pairs.append((strip_placeholder(text), ""))
        elif turn.get("from") == GPT and pairs:
            pairs[-1] = (pairs[-1][0], (pairs[-1][1] + "\n" + text.strip()).strip())
    return pairs


def strip_placeholder(text: str) -> str:
    """Remove the `<image>` placeholder (and the newline that usually follows it) from a human turn."""
    return (
        text.replace(IMAGE_PLACEHOLDER + "\n", "")
        .replace("\n" + IMAGE_PLACEHOLDER, "")
        .replace(IMAGE_PLACEHOLDER, "")
        .strip()
    )
