"""Tables: pale blue background, a teal header row, 2-4 rows of hardware parts with counts and prices."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import SIZE, DrawnObject, Rendered, draw_text, jitter

NAME = "table"
ITEMS = ("bolt", "nut", "gear", "valve", "pump", "hose", "screw", "clamp", "spring", "washer")
HEADERS = (("Item", "Qty", "Price"), ("Part", "Count", "Cost"), ("Tool", "Stock", "Euro"))
HEADER_FILL = (20, 110, 120)
CELL_FILL = (246, 249, 253)
HIGHLIGHT = (250, 228, 110)
GRID = (60, 80, 110)
COLUMNS = (4, 54, 90, 124)  # x edges of the three columns
ROW_HEIGHT = 17


def render(rng: random.Random) -> Rendered:
    """Draw one table; counts and prices are distinct so max/min questions have one answer."""
    background = jitter(rng, (190, 210, 240), 4)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    headers = rng.choice(HEADERS)
    n = rng.randint(2, 4)
    items = rng.sample(ITEMS, n)
    counts = rng.sample(range(1, 60), n)
    prices = rng.sample(range(1, 100), n)
    highlighted = rng.randrange(n) if rng.random() < 0.6 else None
    top = rng.randint(6, 30)
    texts, objects = [], []
    for r in range(n + 1):
        y1 = top + r * ROW_HEIGHT
        fill = HEADER_FILL if r == 0 else HIGHLIGHT if r - 1 == highlighted else CELL_FILL
        draw.rectangle((COLUMNS[0], y1, COLUMNS[-1] - 1, y1 + ROW_HEIGHT - 1), fill=fill, outline=GRID)
        for x in COLUMNS[1:-1]:
            draw.line((x, y1, x, y1 + ROW_HEIGHT - 1), fill=GRID)
        cells = headers if r == 0 else (items[r - 1], str(counts[r - 1]), str(prices[r - 1]))
        ink = (255, 255, 255) if r == 0 else (25, 25, 35)
        for x, cell in zip(COLUMNS, cells, strict=False):
            texts.append(draw_text(image, (x + 4, y1 + 3), cell, 10, ink)[0])
        box = (COLUMNS[0], y1, COLUMNS[-1], y1 + ROW_HEIGHT)
        if r == 0:
            objects.append(DrawnObject("header row", box, HEADER_FILL, ["the header row"]))
        else:
            refs = [f"the row for {items[r - 1]}"]
            if r - 1 == highlighted:
                refs.append("the highlighted row")
            objects.append(DrawnObject(f"{items[r - 1]} row", box, fill, refs))
    count_name, price_name = headers[1].lower(), headers[2].lower()
    a = rng.randrange(n)
    qa = [
        (f"What is the {count_name} of {items[a]}?", str(counts[a])),
        (f"What is the {price_name} of {items[a]}?", str(prices[a])),
        ("How many rows does the table have, not counting the header?", str(n)),
        (f"Which {headers[0].lower()} has the highest {price_name}?", items[prices.index(max(prices))]),
        (f"Which {headers[0].lower()} has the lowest {count_name}?", items[counts.index(min(counts))]),
        (f"What is the total {count_name}?", str(sum(counts))),
    ]
    if highlighted is not None:
        qa.append(("Which row is highlighted?", items[highlighted]))
    marked = f"; the {items[highlighted]} row is highlighted" if highlighted is not None else ""
    cols = ", ".join(headers)
    captions = [
        f"A table with {n} rows and 3 columns ({cols}) listing {', '.join(items)}{marked}.",
        f"Spreadsheet of {n} parts with {count_name} and {price_name} columns under a teal header{marked}.",
        "A parts table: "
        + "; ".join(f"{i} {c} at {p}" for i, c, p in zip(items, counts, prices, strict=True))
        + ".",
    ]
    rows = [" ".join(headers)] + [f"{i} {c} {p}" for i, c, p in zip(items, counts, prices, strict=True)]
    return Rendered(
        image,
        objects,
        texts,
        "\n".join(rows),
        captions,
        qa,
        background,
        "table",
        {
            "headers": list(headers),
            "items": items,
            "counts": counts,
            "prices": prices,
            "highlighted": highlighted,
        },
    )
