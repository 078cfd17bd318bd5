"""App screenshots: dark body, a coloured header with the app title, a text field, buttons, a checkbox."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mixatlas.corpus.synth.canvas import COLORS, SIZE, DrawnObject, Rendered, draw_text, jitter, text_width

NAME = "ui"
TITLES = ("Notes", "Login", "Cart", "Inbox", "Settings", "Profile", "Weather", "Music", "Tasks", "Photos")
PLACEHOLDERS = ("Search", "Email", "Name", "Password", "Address", "Phone")
BUTTONS = ("Save", "Cancel", "Send", "Next", "Buy", "Login", "Share", "Delete", "Back", "Done")
CHECK_LABELS = ("Remember me", "Agree", "Notify me", "Dark mode")
HEADER_COLORS = ("blue", "purple", "orange", "red", "green")
BUTTON_COLORS = ("blue", "green", "red", "orange", "purple", "cyan")
FIELD_FILL, FIELD_EDGE, MUTED, LIGHT = (62, 64, 74), (150, 155, 170), (150, 152, 160), (235, 236, 240)


def render(rng: random.Random) -> Rendered:
    """Draw one app screen; widgets are stacked, so none overlap."""
    background = jitter(rng, (42, 44, 50), 3)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    header_color = rng.choice(HEADER_COLORS)
    title = rng.choice(TITLES)
    draw.rectangle((0, 0, SIZE - 1, 19), fill=COLORS[header_color])
    texts = [draw_text(image, (6, 4), title, 11, (255, 255, 255))[0]]
    objects = [
        DrawnObject("header", (0, 0, SIZE, 20), COLORS[header_color], ["the header bar", "the top bar"])
    ]
    y = rng.randint(26, 32)
    placeholder = rng.choice(PLACEHOLDERS)
    draw.rectangle((6, y, SIZE - 7, y + 15), fill=FIELD_FILL, outline=FIELD_EDGE)
    texts.append(draw_text(image, (10, y + 3), placeholder, 9, MUTED)[0])
    objects.append(
        DrawnObject(
            f"{placeholder.lower()} field",
            (6, y, SIZE - 6, y + 16),
            FIELD_FILL,
            [f"the {placeholder.lower()} field", "the text field"],
        )
    )
    y += 22
    n_buttons = rng.randint(1, 3)
    labels = rng.sample(BUTTONS, n_buttons)
    colors = rng.sample(BUTTON_COLORS, n_buttons)
    row = rng.random() < 0.5 and n_buttons > 1
    x = 6
    for i, (label, color) in enumerate(zip(labels, colors, strict=True)):
        width = text_width(label, 10) + 12 if row else SIZE - 12
        if row and x + width > SIZE - 6:
            y, x = y + 20, 6
        box = (x, y, x + width, y + 16)
        draw.rounded_rectangle((box[0], box[1], box[2] - 1, box[3] - 1), radius=4, fill=COLORS[color])
        ink = (20, 20, 20) if color in ("orange", "cyan") else (255, 255, 255)
        texts.append(draw_text(image, (x + (width - text_width(label, 10)) // 2, y + 3), label, 10, ink)[0])
        refs = [f"the {label} button", f"the {color} button"]
        if i == n_buttons - 1 and not row and n_buttons > 1:
            refs.append("the bottom button")
        objects.append(DrawnObject(f"{label} button", box, COLORS[color], refs))
        if row:
            x += width + 6
        else:
            y += 20
    if row:
        y += 20
    checked = rng.random() < 0.5
    check_label = rng.choice(CHECK_LABELS)
    y = min(y + 2, SIZE - 14)
    draw.rectangle((6, y, 15, y + 9), outline=LIGHT, fill=COLORS["cyan"] if checked else background)
    texts.append(draw_text(image, (20, y - 1), check_label, 9, LIGHT)[0])
    objects.append(DrawnObject("checkbox", (6, y, 16, y + 10), LIGHT, ["the checkbox"]))
    qa = [
        ("How many buttons are on the screen?", str(n_buttons)),
        ("Is the checkbox checked?", "yes" if checked else "no"),
        ("What color is the header bar?", header_color),
        (f"What color is the {labels[0]} button?", colors[0]),
        ("Are the buttons side by side?", "yes" if row else "no"),
    ]
    buttons = " and ".join(labels) if n_buttons < 3 else f"{labels[0]}, {labels[1]} and {labels[2]}"
    state = "a checked" if checked else "an unchecked"
    noun = "button" if n_buttons == 1 else "buttons"
    captions = [
        f"A dark app screen titled {title} with a {placeholder.lower()} field, {buttons} {noun}"
        f" and {state} box.",
        f"Mobile {title.lower()} screen with a {header_color} header, a text field and {n_buttons} {noun}.",
        f"Screenshot of the {title} app: {placeholder.lower()} input, {buttons} {noun}, {state} checkbox.",
    ]
    ocr = "\n".join([title, placeholder, *labels, check_label])
    return Rendered(
        image,
        objects,
        texts,
        ocr,
        captions,
        qa,
        background,
        "screenshot",
        {"title": title, "buttons": labels, "button_colors": colors, "checked": checked},
    )
