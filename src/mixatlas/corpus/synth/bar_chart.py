"""Bar charts: white background, a title, 3-5 coloured bars of crop categories with their values."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import (
    COLORS,
    SIZE,
    DrawnObject,
    Rendered,
    draw_text,
    jitter,
    text_width,
)

NAME = "bar_chart"
CATEGORIES = ("fig", "kiwi", "lime", "pear", "plum", "date", "yam", "corn", "bean", "rice")
METRICS = ("Sales", "Revenue", "Orders", "Votes", "Visits", "Harvest")
BAR_COLORS = ("red", "blue", "green", "orange", "purple", "cyan")
BASE, TOP = 104, 26  # y of the x-axis and of a value-10 bar top


def render(rng: random.Random) -> Rendered:
    """Draw one bar chart; values are distinct integers 1-9, so highest/lowest are unique."""
    background = jitter(rng, (252, 252, 252), 3)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    n = rng.randint(3, 5)
    cats = rng.sample(CATEGORIES, n)
    values = rng.sample(range(1, 10), n)
    colors = rng.sample(BAR_COLORS, n)
    title = f"{rng.choice(METRICS)} {rng.randint(2015, 2024)}"
    texts = [draw_text(image, ((SIZE - text_width(title, 11)) // 2, 2), title, 11, (20, 20, 20))[0]]
    draw.line((6, BASE, SIZE - 6, BASE), fill=(40, 40, 40))
    slot = (SIZE - 12) // n
    width = int(slot * 0.6)
    objects = []
    for i, (cat, value, color) in enumerate(zip(cats, values, colors, strict=True)):
        x1 = 6 + i * slot + (slot - width) // 2
        top = BASE - round(value * (BASE - TOP) / 10)
        box = (x1, top, x1 + width, BASE)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=COLORS[color])
        refs = [f"the bar for {cat}", f"the {color} bar"]
        if value == max(values):
            refs.append("the tallest bar")
        if value == min(values):
            refs.append("the shortest bar")
        objects.append(DrawnObject(f"{cat} bar", box, COLORS[color], refs))
        label_x = x1 + (width - text_width(cat, 8)) // 2
        texts.append(draw_text(image, (label_x, BASE + 3), cat, 8, (40, 40, 40))[0])
        value_x = x1 + (width - text_width(str(value), 9)) // 2
        texts.append(draw_text(image, (value_x, top - 12), str(value), 9, (40, 40, 40))[0])
    best, worst = cats[values.index(max(values))], cats[values.index(min(values))]
    a, b = rng.sample(range(n), 2)
    qa = [
        (f"What is the value of {cats[a]}?", str(values[a])),
        ("Which category has the highest value?", best),
        ("Which category has the lowest value?", worst),
        ("How many bars are in the chart?", str(n)),
        (f"What color is the bar for {cats[a]}?", colors[a]),
        (f"What is the difference between {cats[a]} and {cats[b]}?", str(abs(values[a] - values[b]))),
        (f"Is {cats[a]} greater than {cats[b]}?", "yes" if values[a] > values[b] else "no"),
    ]
    listing = ", ".join(f"{c} {v}" for c, v in zip(cats, values, strict=True))
    captions = [
        f"A bar chart titled {title} with {n} bars; {best} is the highest at {max(values)}.",
        f"Bar chart of {title.split()[0].lower()} by crop: {listing}.",
        f"A bar chart comparing {n} crops, where {best} leads and {worst} is the lowest.",
    ]
    ocr = "\n".join([title, *(f"{c} {v}" for c, v in zip(cats, values, strict=True))])
    return Rendered(
        image,
        objects,
        texts,
        ocr,
        captions,
        qa,
        background,
        "chart",
        {"title": title, "values": dict(zip(cats, values, strict=True)), "colors": colors},
    )
