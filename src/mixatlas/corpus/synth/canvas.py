"""Drawing primitives shared by the synthetic domains: fonts, cached text stamping, boxes, colours.

Text is drawn word by word from a per-process cache of word masks (FreeType rendering of Pillow's
built-in font costs ~0.5 ms a call here; stamping a cached mask costs microseconds). Words are drawn
unantialiased (`ImageDraw.fontmode = "1"`, so text pixels carry exactly the fill colour); the next word
starts `word_gap(size)` px after the right edge of the previous word's ink, so a test can re-draw any
text item with plain `ImageDraw.text`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cache, lru_cache

from PIL import Image, ImageDraw, ImageFont

SIZE = 128
BOX_SCALE = 1000
BOX_FORMAT = (
    "[x1, y1, x2, y2] integers in 0-1000: pixel coordinates divided by the image width (x) or height (y)"
    " and multiplied by 1000, rounded; (x1, y1) is the top-left corner, (x2, y2) the bottom-right"
    " (exclusive)"
)
RGB = tuple[int, int, int]

COLORS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "orange": (245, 130, 30),
    "purple": (140, 60, 190),
    "pink": (235, 100, 170),
    "cyan": (30, 190, 210),
    "brown": (140, 90, 40),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}


@dataclass
class TextItem:
    """One run of words drawn at (x, y) with Pillow's default font at `size`, colour `fill`."""

    text: str
    x: int
    y: int
    size: int
    fill: RGB

    def to_json(self) -> list:
        return [self.text, self.x, self.y, self.size, list(self.fill)]


@dataclass
class DrawnObject:
    """A labelled object: `box` in pixels (x1, y1, x2, y2, exclusive); `color` is its main fill, which
    covers a visible part of the box; `refs` are referring expressions that pick it out uniquely."""

    label: str
    box: tuple[int, int, int, int]
    color: RGB
    refs: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"label": self.label, "box": normalized_box(self.box), "color": list(self.color)}


@dataclass
class Rendered:
    """What a domain renderer drew, with the truths the task builders turn into answers.

    `qa` holds (question, short answer) pairs true for the image; `ocr` is all drawn text in reading
    order (its words are exactly the words of `texts`, in order).
    """

    image: Image.Image
    objects: list[DrawnObject]
    texts: list[TextItem]
    ocr: str
    captions: list[str]
    qa: list[tuple[str, str]]
    background: RGB | None
    noun: str
    truth: dict = field(default_factory=dict)


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in default font at `size` px."""
    return ImageFont.load_default(size)


def word_gap(size: int) -> int:
    """Pixels between the ink of one word and the origin of the next."""
    return size // 3 + 1


@lru_cache(maxsize=16384)
def _word_mask(word: str, size: int) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """(mask, ink box) of one word drawn at the origin, unantialiased (the canvas is padded because
    unantialiased glyphs run wider than `getbbox` reports)."""
    _, _, right, bottom = font(size).getbbox(word)
    mask = Image.new("L", (right * 2 + size, bottom + size), 0)
    draw = ImageDraw.Draw(mask)
    draw.fontmode = "1"
    draw.text((0, 0), word, fill=255, font=font(size))
    return mask, mask.getbbox()


def advance(word: str, size: int) -> int:
    """Width of `word`: the right edge of its ink when drawn at x = 0."""
    ink = _word_mask(word, size)[1]
    return ink[2] if ink is not None else size // 2


def text_width(text: str, size: int) -> int:
    """Width in pixels that `draw_text` covers for `text`."""
    words = text.split()
    return sum(advance(w, size) for w in words) + word_gap(size) * max(len(words) - 1, 0)


def draw_text(
    image: Image.Image, xy: tuple[int, int], text: str, size: int, fill: RGB
) -> tuple[TextItem, tuple[int, int, int, int]]:
    """Stamp `text` at `xy`; returns its `TextItem` and the ink box (x1, y1, x2, y2) in pixels."""
    x, y = xy
    x1 = y1 = SIZE * 4
    x2 = y2 = -1
    for word in text.split():
        mask, ink = _word_mask(word, size)
        image.paste(fill, (x, y), mask)
        if ink is not None:
            x1, y1 = min(x1, x + ink[0]), min(y1, y + ink[1])
            x2, y2 = max(x2, x + ink[2]), max(y2, y + ink[3])
        x += advance(word, size) + word_gap(size)
    return TextItem(text, xy[0], xy[1], size, fill), (x1, y1, x2, y2)


def normalized_box(box: tuple[int, int, int, int], width: int = SIZE, height: int = SIZE) -> list[int]:
    """Pixel box -> `[x1, y1, x2, y2]` in 0-1000 (see `BOX_FORMAT`)."""
    x1, y1, x2, y2 = box
    return [
        round(x1 * BOX_SCALE / width),
        round(y1 * BOX_SCALE / height),
        round(x2 * BOX_SCALE / width),
        round(y2 * BOX_SCALE / height),
    ]


def format_box(box: tuple[int, int, int, int]) -> str:
    """`"[x1, y1, x2, y2]"` text of a pixel box, normalized to 0-1000."""
    return "[" + ", ".join(str(v) for v in normalized_box(box)) + "]"


def jitter(rng: random.Random, color: RGB, amount: int) -> RGB:
    """`color` with each channel moved by up to +-amount (clipped to 0-255)."""
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in color)  # type: ignore[return-value]


def place_boxes(
    rng: random.Random,
    sizes: list[tuple[int, int]],
    region: tuple[int, int, int, int],
    gap: int = 3,
    tries: int = 60,
) -> list[tuple[int, int, int, int]]:
    """Non-overlapping boxes of the given (w, h) sizes inside `region` (x1, y1, x2, y2), at least `gap`
    pixels apart; a box that does not fit after `tries` draws is left out."""
    placed: list[tuple[int, int, int, int]] = []
    for w, h in sizes:
        for _ in range(tries):
            x = rng.randint(region[0], region[2] - w)
            y = rng.randint(region[1], region[3] - h)
            box = (x, y, x + w, y + h)
            if all(
                box[2] + gap <= o[0] or o[2] + gap <= box[0] or box[3] + gap <= o[1] or o[3] + gap <= box[1]
                for o in placed
            ):
                placed.append(box)
                break
    return placed


def join_words(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def count_phrase(n: int, noun: str) -> str:
    """'one tree', '3 trees'."""
    return f"one {noun}" if n == 1 else f"{n} {noun}s"
