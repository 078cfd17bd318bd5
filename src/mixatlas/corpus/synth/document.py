"""Text documents: cream paper, a heading, 3-5 lines of office prose, an optional stamp and page number."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import COLORS, SIZE, DrawnObject, Rendered, draw_text, jitter, text_width

NAME = "document"
KINDS = (
    "Invoice",
    "Memo",
    "Notice",
    "Agenda",
    "Minutes",
    "Contract",
    "Receipt",
    "Policy",
    "Report",
    "Letter",
)
WORDS = (
    "the",
    "board",
    "approved",
    "budget",
    "for",
    "review",
    "payment",
    "due",
    "within",
    "days",
    "staff",
    "meeting",
    "scheduled",
    "quarterly",
    "results",
    "signed",
    "by",
    "client",
    "terms",
    "apply",
    "office",
    "closed",
    "on",
    "monday",
    "please",
    "submit",
    "forms",
    "before",
    "noon",
    "total",
    "amount",
    "paid",
    "in",
    "full",
    "account",
    "number",
    "audit",
    "pending",
    "net",
    "thirty",
    "agreed",
    "rates",
    "per",
    "hour",
    "attached",
    "copy",
    "of",
    "order",
    "ledger",
    "balance",
)
STAMPS = ("PAID", "DRAFT", "VOID", "COPY", "FINAL")
STAMP_COLORS = ("red", "blue", "green")
INK = (30, 30, 40)
HEADING_INK = (20, 40, 110)


def _line(rng: random.Random, width: int) -> str:
    words = [rng.choice(WORDS)]
    while True:
        word = rng.choice(WORDS)
        if text_width(" ".join([*words, word]), 10) > width or len(words) >= 5:
            return " ".join(words)
        words.append(word)


def render(rng: random.Random) -> Rendered:
    """Draw one document page; line count, stamp and page number are the checkable facts."""
    background = jitter(rng, (236, 222, 180), 4)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    kind = rng.choice(KINDS)
    heading, heading_ink = draw_text(image, (8, 4), kind, 13, HEADING_INK)
    draw.line((8, 20, SIZE - 8, 20), fill=HEADING_INK)
    objects = [DrawnObject("heading", heading_ink, HEADING_INK, ["the heading", "the title"])]
    texts = [heading]
    n_lines = rng.randint(3, 5)
    body = [SIZE, SIZE, 0, 0]
    lines = []
    for i in range(n_lines):
        text = _line(rng, SIZE - 20)
        item, ink = draw_text(image, (8, 25 + i * 13), text, 10, INK)
        texts.append(item)
        lines.append(text)
        body = [min(body[0], ink[0]), min(body[1], ink[1]), max(body[2], ink[2]), max(body[3], ink[3])]
    objects.append(DrawnObject("paragraph", tuple(body), INK, ["the paragraph", "the body text"]))  # type: ignore[arg-type]
    stamp = rng.choice(STAMPS) if rng.random() < 0.6 else None
    stamp_color = rng.choice(STAMP_COLORS)
    if stamp is not None:
        rgb = COLORS[stamp_color]
        sx, sy = rng.randint(8, 50), 96
        sw = text_width(stamp, 11) + 8
        draw.rectangle((sx, sy, sx + sw, sy + 17), outline=rgb, width=2)
        texts.append(draw_text(image, (sx + 4, sy + 2), stamp, 11, rgb)[0])
        objects.append(DrawnObject(f"{stamp} stamp", (sx, sy, sx + sw + 1, sy + 18), rgb, ["the stamp"]))
    page = rng.randint(1, 9)
    page_text = f"Page {page}"
    page_item, page_ink = draw_text(image, (SIZE - 8 - text_width(page_text, 9), 114), page_text, 9, INK)
    texts.append(page_item)
    objects.append(DrawnObject("page number", page_ink, INK, ["the page number"]))
    qa = [
        ("How many lines does the body have?", str(n_lines)),
        ("Is there a stamp on the page?", "yes" if stamp else "no"),
        ("What is the page number?", str(page)),
        ("What kind of document is this?", kind.lower()),
    ]
    if stamp is not None:
        qa.append(("What color is the stamp?", stamp_color))
    stamped = f" and a {stamp_color} {stamp} stamp" if stamp else ""
    captions = [
        f"A {kind.lower()} page with a heading, {n_lines} lines of text{stamped}.",
        f"Scanned {kind.lower()} on cream paper, page {page}, with {n_lines} short lines of text{stamped}.",
        f"An office document titled {kind} with {n_lines} lines{stamped}.",
    ]
    ocr = "\n".join([kind, *lines, *([stamp] if stamp else []), page_text])
    return Rendered(
        image,
        objects,
        texts,
        ocr,
        captions,
        qa,
        background,
        "document",
        {"kind": kind, "lines": lines, "stamp": stamp, "page": page},
    )
