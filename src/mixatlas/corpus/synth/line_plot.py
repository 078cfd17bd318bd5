"""Line plots: dark navy background with a grid, 1-3 bright series of cities over consecutive months."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import COLORS, SIZE, DrawnObject, Rendered, draw_text, jitter, text_width

NAME = "line_plot"
CITIES = ("Oslo", "Lima", "Cairo", "Quito", "Perth", "Riga", "Dakar", "Hanoi")
METRICS = ("Rainfall", "Temperature", "Humidity", "Traffic", "Demand")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
LINE_COLORS = ("cyan", "yellow", "pink", "orange", "green")
PLOT = (10, 30, 122, 100)  # x1, y1, x2, y2 of the plotting area
LIGHT = (215, 220, 235)


def _series(rng: random.Random, months: int) -> list[int]:
    """A random walk in 0-9 whose maximum is unique."""
    while True:
        values = [rng.randint(1, 8)]
        for _ in range(months - 1):
            values.append(min(9, max(0, values[-1] + rng.randint(-3, 3))))
        if values.count(max(values)) == 1 and values[0] != values[-1]:
            return values


def render(rng: random.Random) -> Rendered:
    """Draw one line plot with a legend; each series has a unique peak month."""
    background = jitter(rng, (22, 26, 62), 4)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    n_series, n_months = rng.randint(1, 3), rng.randint(4, 6)
    start = rng.randrange(12 - n_months + 1)
    months = MONTHS[start : start + n_months]
    cities = rng.sample(CITIES, n_series)
    colors = rng.sample(LINE_COLORS, n_series)
    metric = rng.choice(METRICS)
    x1, y1, x2, y2 = PLOT
    for gy in range(y1, y2 + 1, (y2 - y1) // 4):
        draw.line((x1, gy, x2, gy), fill=(48, 54, 96))
    xs = [x1 + 4 + round(i * (x2 - x1 - 8) / (n_months - 1)) for i in range(n_months)]
    for gx in xs:
        draw.line((gx, y1, gx, y2), fill=(48, 54, 96))
    texts = [draw_text(image, (4, 2), metric, 11, LIGHT)[0]]
    series = {city: _series(rng, n_months) for city in cities}
    objects = []
    lx = 4
    legend_box = [SIZE, SIZE, 0, 0]
    for city, color in zip(cities, colors, strict=True):
        rgb = COLORS[color]
        points = [(x, y2 - round(v * (y2 - y1) / 9)) for x, v in zip(xs, series[city], strict=True)]
        draw.line(points, fill=rgb, width=2)
        for px, py in points:
            draw.rectangle((px - 1, py - 1, px + 1, py + 1), fill=rgb)
        box = (
            min(p[0] for p in points) - 1,
            min(p[1] for p in points) - 1,
            max(p[0] for p in points) + 2,
            max(p[1] for p in points) + 2,
        )
        objects.append(DrawnObject(f"{city} line", box, rgb, [f"the {city} line", f"the {color} line"]))
        draw.rectangle((lx, 19, lx + 5, 24), fill=rgb)
        item, ink = draw_text(image, (lx + 8, 16), city, 9, LIGHT)
        texts.append(item)
        legend_box = [
            min(legend_box[0], lx),
            min(legend_box[1], ink[1], 19),
            max(legend_box[2], ink[2]),
            max(legend_box[3], ink[3], 25),
        ]
        lx = ink[2] + 6
    objects.append(DrawnObject("legend", tuple(legend_box), LIGHT, ["the legend"]))  # type: ignore[arg-type]
    for x, month in zip(xs, months, strict=True):
        texts.append(draw_text(image, (x - text_width(month, 8) // 2, y2 + 4), month, 8, LIGHT)[0])
    city = rng.choice(cities)
    peak = months[series[city].index(max(series[city]))]
    trend = "higher" if series[city][-1] > series[city][0] else "lower"
    color = colors[cities.index(city)]
    qa = [
        ("How many lines are plotted?", str(n_series)),
        (f"In which month does {city} peak?", peak),
        (f"What color is the {city} line?", color),
        (f"Does {city} end higher or lower than it starts?", trend),
        ("What is the first month on the x-axis?", months[0]),
        ("How many months are shown?", str(n_months)),
    ]
    month = rng.randrange(n_months)
    at_month = [series[c][month] for c in cities]
    if n_series > 1 and at_month.count(max(at_month)) == 1:
        qa.append((f"Which city is highest in {months[month]}?", cities[at_month.index(max(at_month))]))
    names = " and ".join(cities) if n_series < 3 else f"{cities[0]}, {cities[1]} and {cities[2]}"
    captions = [
        f"A line plot of {metric.lower()} from {months[0]} to {months[-1]} for {names};"
        f" {city} peaks in {peak}.",
        f"Dark-themed line chart with {n_series} series ({names}) over {n_months} months"
        f" of {metric.lower()}.",
        f"{metric} per month for {names}, shown as lines on a grid; {city} ends {trend} than it starts.",
    ]
    ocr = "\n".join([metric, " ".join(cities), " ".join(months)])
    return Rendered(
        image,
        objects,
        texts,
        ocr,
        captions,
        qa,
        background,
        "plot",
        {"metric": metric, "months": list(months), "series": series, "colors": colors},
    )
