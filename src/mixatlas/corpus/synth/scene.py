"""Outdoor scenes: a sky gradient over grass with trees, houses, cars, clouds, the sun and a road sign."""

from __future__ import annotations

import random
from collections import Counter
from functools import lru_cache

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import (
    COLORS,
    SIZE,
    DrawnObject,
    Rendered,
    count_phrase,
    draw_text,
    join_words,
    text_width,
)

NAME = "scene"
SIGN_WORDS = ("STOP", "EXIT", "PARK", "SLOW", "CITY", "FARM", "ZOO", "LAKE", "PORT", "MILL")
HOUSE_COLORS = ("red", "blue", "yellow", "white")
CAR_COLORS = ("red", "blue", "yellow", "orange", "purple", "white")
CROWN, TRUNK, ROOF, SUN = (25, 100, 35), (100, 60, 25), (120, 40, 30), (250, 215, 40)
CLOUD, SIGN_PLATE, POLE = (245, 247, 250), (30, 120, 60), (90, 90, 90)
GRASS = (96, 168, 72)


@lru_cache(maxsize=32)
def _backdrop(horizon: int, tone: int) -> Image.Image:
    """Sky gradient above `horizon`, flat grass below (cached: drawn once per process and variant)."""
    image = Image.new("RGB", (SIZE, SIZE), GRASS)
    draw = ImageDraw.Draw(image)
    for y in range(horizon):
        t = y / max(horizon - 1, 1)
        draw.line((0, y, SIZE, y), fill=(int(90 + 60 * t + tone), int(150 + 50 * t + tone), 235))
    return image


def _tree(draw: ImageDraw.ImageDraw, x: int, ground: int, height: int) -> tuple[int, int, int, int]:
    width = height * 2 // 3
    draw.rectangle((x + width // 2 - 2, ground - height // 3, x + width // 2 + 1, ground - 1), fill=TRUNK)
    draw.ellipse((x, ground - height, x + width - 1, ground - height // 3 + 2), fill=CROWN)
    return (x, ground - height, x + width, ground)


def _house(draw: ImageDraw.ImageDraw, x: int, ground: int, color: str) -> tuple[int, int, int, int]:
    width, wall = 22, 14
    draw.rectangle((x, ground - wall, x + width - 1, ground - 1), fill=COLORS[color])
    roof = [(x - 2, ground - wall), (x + width + 1, ground - wall), (x + width // 2, ground - wall - 10)]
    draw.polygon(roof, fill=ROOF)
    draw.rectangle((x + 8, ground - 8, x + 13, ground - 1), fill=TRUNK)
    return (x - 2, ground - wall - 10, x + width + 2, ground)


def _car(draw: ImageDraw.ImageDraw, x: int, ground: int, color: str) -> tuple[int, int, int, int]:
    draw.rectangle((x + 4, ground - 13, x + 15, ground - 8), fill=COLORS[color])
    draw.rectangle((x, ground - 8, x + 19, ground - 3), fill=COLORS[color])
    for wx in (x + 3, x + 13):
        draw.ellipse((wx, ground - 5, wx + 4, ground - 1), fill=(20, 20, 20))
    return (x, ground - 13, x + 20, ground)


def render(rng: random.Random) -> Rendered:
    """Draw one scene; ground objects stand in separate slots, so their boxes never overlap."""
    horizon = rng.randint(58, 72)
    image = _backdrop(horizon, rng.randint(0, 3) * 5).copy()
    draw = ImageDraw.Draw(image)
    objects = []
    has_sun = rng.random() < 0.6
    if has_sun:
        sx, r = rng.randint(80, 108), rng.randint(7, 10)
        draw.ellipse((sx - r, 8 - r + 6, sx + r, 8 + r + 6), fill=SUN)
        objects.append(DrawnObject("sun", (sx - r, 14 - r, sx + r + 1, 14 + r + 1), SUN, ["the sun"]))
    for _ in range(rng.randint(0, 2)):
        cx, cy = rng.randint(4, 40), rng.randint(4, 22)
        draw.ellipse((cx, cy, cx + 22, cy + 9), fill=CLOUD)
        draw.ellipse((cx + 6, cy - 4, cx + 16, cy + 5), fill=CLOUD)
        objects.append(DrawnObject("cloud", (cx, cy - 4, cx + 23, cy + 10), CLOUD, []))
    slots = rng.sample(range(4), rng.randint(2, 4))
    kinds = ["sign"] + [rng.choice(("tree", "tree", "house", "car")) for _ in slots[1:]]
    rng.shuffle(kinds)
    ground_objects = []
    word = rng.choice(SIGN_WORDS)
    texts = []
    for slot, kind in sorted(zip(slots, kinds, strict=True)):
        x = 2 + slot * 31 + rng.randint(0, 2)
        ground = rng.randint(horizon + 18, SIZE - 6)
        if kind == "tree":
            box, color = _tree(draw, x + 2, ground, rng.randint(24, 36)), "green"
        elif kind == "house":
            color = rng.choice(HOUSE_COLORS)
            box = _house(draw, x + 3, ground, color)
        elif kind == "car":
            color = rng.choice(CAR_COLORS)
            box = _car(draw, x + 1, ground, color)
        else:
            color = "green"
            width = text_width(word, 9) + 4
            draw.rectangle((x + width // 2 - 1, ground - 12, x + width // 2, ground - 1), fill=POLE)
            draw.rectangle((x, ground - 26, x + width - 1, ground - 13), fill=SIGN_PLATE)
            texts.append(draw_text(image, (x + 2, ground - 25), word, 9, (250, 250, 250))[0])
            box = (x, ground - 26, x + width, ground)
        ground_objects.append((kind, color, box))
    counts = Counter(kind for kind, _, _ in ground_objects)
    colors = Counter((kind, color) for kind, color, _ in ground_objects)
    main_color = {"tree": CROWN, "sign": SIGN_PLATE}
    for i, (kind, color, box) in enumerate(ground_objects):
        refs = [f"the {kind}"] if counts[kind] == 1 else []
        if kind in ("house", "car") and colors[(kind, color)] == 1:
            refs.append(f"the {color} {kind}")
        if counts[kind] > 1 and all(k != kind for k, _, _ in ground_objects[:i]):
            refs.append(f"the leftmost {kind}")
        rgb = main_color.get(kind, COLORS.get(color, CROWN))
        objects.append(DrawnObject(kind, box, rgb, refs))
    kind = rng.choice(("tree", "house", "car"))
    qa = [
        (f"How many {kind}s are there?", str(counts[kind])),
        ("Is the sun visible?", "yes" if has_sun else "no"),
        ("Is there a road sign?", "yes"),
        ("How many objects stand on the grass?", str(len(ground_objects))),
    ]
    for kind in ("car", "house"):
        if counts[kind] == 1:
            qa.append((f"What color is the {kind}?", next(c for k, c, _ in ground_objects if k == kind)))
    things = join_words([count_phrase(n, k) if n > 1 else f"a {k}" for k, n in sorted(counts.items())])
    sky = "a sunny sky" if has_sun else "a clear sky"
    captions = [
        f"An outdoor scene with {things} under {sky}.",
        f"A sunny landscape with {things} on green grass." if has_sun else f"A grassy field with {things}.",
        f"Cartoon countryside: {things}, and a green sign by the road.",
    ]
    return Rendered(
        image,
        objects,
        texts,
        word,
        captions,
        qa,
        None,
        "scene",
        {"sign": word, "ground_objects": [[k, c] for k, c, _ in ground_objects], "sun": has_sun},
    )
