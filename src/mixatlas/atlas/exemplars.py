"""Exemplar thumbnails: one PNG, one row per concept, showing the images closest to each centroid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mixatlas.errors import MixAtlasError

THUMB_PX = 72
LABEL_PX = 180
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def write_exemplar_grid(path: Path, exemplar_refs: Sequence[Sequence[str]], names: Sequence[str],
                        thumb_px: int = THUMB_PX) -> Path:
    """Draw `exemplar_refs[j]` (image refs, best first) as row j, labelled `names[j]`; returns `path`.

    An image that no longer opens is left blank rather than failing the whole grid.
    """
    from PIL import Image, ImageDraw, ImageFont

    from mixatlas.corpus import open_image

    columns = max((len(refs) for refs in exemplar_refs), default=0)
    size = (LABEL_PX + max(columns, 1) * thumb_px, max(len(names), 1) * thumb_px)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for row, (name, refs) in enumerate(zip(names, exemplar_refs, strict=True)):
        top = row * thumb_px
        draw.text((6, top + thumb_px // 2 - 8), f"{row}: {name}"[:26], fill=INK, font=font)
        for column, ref in enumerate(refs):
            try:
                image = open_image(ref)
            except MixAtlasError:
                continue
            image.thumbnail((thumb_px - 4, thumb_px - 4))
            canvas.paste(image, (LABEL_PX + column * thumb_px + 2, top + 2))
        draw.line([(0, top + thumb_px - 1), (canvas.width, top + thumb_px - 1)], fill=(200, 200, 200))
    canvas.save(path)
    return Path(path)
