"""Node-link diagrams: pale green background, 3-5 labelled boxes or circles joined by arrows in a chain."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import SIZE, DrawnObject, Rendered, draw_text, jitter, text_width

NAME = "diagram"
LABELS = (
    "Input",
    "Parse",
    "Train",
    "Eval",
    "Store",
    "Cache",
    "Load",
    "Sort",
    "Merge",
    "Split",
    "Query",
    "Index",
)
NODE_FILL, EDGE, INK = (255, 255, 255), (40, 70, 50), (20, 30, 25)
SLOTS = [(4 + c * 42, 8 + r * 40) for r in range(3) for c in range(3)]  # top-left of a 40 x 36 cell
NODE_W, NODE_H = 36, 18


def _border_point(box: tuple[int, int, int, int], toward: tuple[float, float]) -> tuple[float, float]:
    """Where the segment from the box centre toward `toward` leaves the box."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    dx, dy = toward[0] - cx, toward[1] - cy
    scale = min(
        (box[2] - box[0]) / 2 / abs(dx) if dx else math.inf,
        (box[3] - box[1]) / 2 / abs(dy) if dy else math.inf,
    )
    return cx + dx * scale, cy + dy * scale


def render(rng: random.Random) -> Rendered:
    """Draw a chain of nodes (flow order = label order) with an arrow between consecutive nodes."""
    background = jitter(rng, (212, 240, 212), 4)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    n = rng.randint(3, 5)
    labels = rng.sample(LABELS, n)
    shapes = [rng.choice(("box", "circle")) for _ in labels]
    boxes = []
    for sx, sy in rng.sample(SLOTS, n):
        x, y = sx + rng.randint(0, 40 - NODE_W), sy + rng.randint(0, 36 - NODE_H)
        boxes.append((x, y, x + NODE_W, y + NODE_H))
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    for a in range(n - 1):
        draw.line((*centres[a], *centres[a + 1]), fill=EDGE, width=1)
    texts, objects = [], []
    for label, shape, box in zip(labels, shapes, boxes, strict=True):
        corners = (box[0], box[1], box[2] - 1, box[3] - 1)
        if shape == "box":
            draw.rectangle(corners, fill=NODE_FILL, outline=EDGE)
        else:
            draw.ellipse(corners, fill=NODE_FILL, outline=EDGE)
        x = (box[0] + box[2] - text_width(label, 9)) // 2
        texts.append(draw_text(image, (x, box[1] + 4), label, 9, INK)[0])
        objects.append(DrawnObject(f"{label} node", box, NODE_FILL, [f"the {label} node"]))
    for a in range(n - 1):
        tip = _border_point(boxes[a + 1], centres[a])
        angle = math.atan2(tip[1] - centres[a][1], tip[0] - centres[a][0])
        wing = [
            (tip[0] - 6 * math.cos(angle + s * 0.45), tip[1] - 6 * math.sin(angle + s * 0.45))
            for s in (-1, 1)
        ]
        draw.polygon([tip, *wing], fill=EDGE)
    a = rng.randrange(n - 1)
    node = rng.randrange(n)
    circles = shapes.count("circle")
    qa = [
        ("How many nodes are in the diagram?", str(n)),
        ("How many arrows are there?", str(n - 1)),
        (f"Which node does {labels[a]} point to?", labels[a + 1]),
        ("Which node has no incoming arrow?", labels[0]),
        ("Which node is the last step?", labels[-1]),
        (f"What shape is the {labels[node]} node?", shapes[node]),
        ("How many nodes are circles?", str(circles)),
    ]
    flow = " -> ".join(labels)
    captions = [
        f"A flow diagram with {n} nodes: {flow}.",
        f"Pipeline chart where {labels[0]} leads through {n - 2} steps to {labels[-1]}.",
        f"A node-link diagram of {n} steps ({circles} circles, {n - circles} boxes) joined by arrows.",
    ]
    return Rendered(
        image,
        objects,
        texts,
        " ".join(labels),
        captions,
        qa,
        background,
        "diagram",
        {"labels": labels, "shapes": shapes, "edges": [[labels[i], labels[i + 1]] for i in range(n - 1)]},
    )
