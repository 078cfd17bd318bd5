"""2-D shapes: mid-grey background, 2-5 coloured circles, squares, triangles and diamonds with letters."""

from __future__ import annotations

import random
import string
from collections import Counter

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import (
    COLORS,
    SIZE,
    DrawnObject,
    Rendered,
    count_phrase,
    draw_text,
    join_words,
    place_boxes,
    text_width,
)

NAME = "shapes"
KINDS = ("circle", "square", "triangle", "diamond")
SHAPE_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "white")
LETTER_SIZE = 10


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], fill: tuple) -> None:
    x1, y1, x2, y2 = box[0], box[1], box[2] - 1, box[3] - 1
    cx = (x1 + x2) / 2
    if kind == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=fill)
    elif kind == "square":
        draw.rectangle((x1, y1, x2, y2), fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
    else:
        cy = (y1 + y2) / 2
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)


def render(rng: random.Random) -> Rendered:
    """Draw 2-5 non-overlapping shapes, each with a capital letter near its centre."""
    gray = rng.randint(118, 138)
    background = (gray, gray, gray)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    sides = [rng.randint(22, 38) for _ in range(rng.randint(2, 5))]
    boxes = place_boxes(rng, [(s, s) for s in sides], (2, 2, SIZE - 2, SIZE - 2), gap=4)
    boxes.sort(key=lambda b: (b[0], b[1]))
    kinds = [rng.choice(KINDS) for _ in boxes]
    colors = [rng.choice(SHAPE_COLORS) for _ in boxes]
    letters = rng.sample(string.ascii_uppercase, len(boxes))
    texts, objects = [], []
    kind_counts, color_counts = Counter(kinds), Counter(colors)
    pair_counts = Counter(zip(colors, kinds, strict=True))
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    for i, (box, kind, color, letter) in enumerate(zip(boxes, kinds, colors, letters, strict=True)):
        _draw_shape(draw, kind, box, COLORS[color])
        ink = (20, 20, 20) if color in ("yellow", "white", "orange") else (250, 250, 250)
        lx = (box[0] + box[2] - text_width(letter, LETTER_SIZE)) // 2
        ly = (box[1] + box[3]) // 2 - 5 + (3 if kind == "triangle" else 0)
        texts.append(draw_text(image, (lx, ly), letter, LETTER_SIZE, ink)[0])
        refs = [f"the shape marked {letter}"]
        if pair_counts[(color, kind)] == 1:
            refs.append(f"the {color} {kind}")
        if kind_counts[kind] == 1:
            refs.append(f"the {kind}")
        if areas[i] == max(areas) and areas.count(max(areas)) == 1:
            refs.append("the largest shape")
        if i == 0:
            refs.append("the leftmost shape")
        objects.append(DrawnObject(f"{color} {kind}", box, COLORS[color], refs))
    kind = rng.choice(KINDS)
    qa = [
        ("How many shapes are there?", str(len(boxes))),
        (f"How many {kind}s are there?", str(kind_counts[kind])),
        (f"Is there a {kind} in the image?", "yes" if kind_counts[kind] else "no"),
    ]
    uniq_kind = [k for k in kinds if kind_counts[k] == 1]
    if uniq_kind:
        k = rng.choice(uniq_kind)
        qa.append((f"What color is the {k}?", colors[kinds.index(k)]))
    uniq_color = [c for c in colors if color_counts[c] == 1]
    if uniq_color:
        c = rng.choice(uniq_color)
        qa.append((f"What shape is the {c} one?", kinds[colors.index(c)]))
    described = join_words([f"a {c} {k}" for c, k in zip(colors, kinds, strict=True)])
    tally = join_words([count_phrase(n, k) for k, n in sorted(kind_counts.items())])
    captions = [
        f"{len(boxes)} shapes on a gray background: {described}.",
        f"Simple geometric figure with {tally}, each marked with a letter.",
        f"Flat colored shapes ({described}) scattered on gray.",
    ]
    return Rendered(
        image,
        objects,
        texts,
        " ".join(letters),
        captions,
        qa,
        background,
        "picture",
        {"kinds": kinds, "colors": colors, "letters": letters},
    )
