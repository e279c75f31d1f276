"""Contact sheets: linked images side by side, so a person can check the links by eye.

bench links images that are copies of each other (exact copies, resized or re-encoded,
re-processed, mirrored/rotated, or in the same user-given patient group) so that linked
images never straddle train/val/test. :func:`contact_sheet` draws one band per
:class:`SheetRow`: a title line, then example pairs (two thumbnails in a light frame,
with both file names and a caption under them) or, for a group row, the group's
members one by one. Only Pillow and numpy are used; the PNG is deterministic (same
inputs, same bytes) and written atomically. :func:`embed_png` turns it into a
``data:`` URI for the self-contained HTML report.

    row = SheetRow("mirrored/rotated: 14 links", [("a/1.png", "b/7.png")], ["score 0.97"])
    contact_sheet(Path("data"), [row], Path("reports/links.png"))
"""

from __future__ import annotations

import base64
import functools
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bench.data.images import UnreadableImage, open_rgb
from bench.faults import durable_write

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

PAD = 12  # margin around the sheet and between a row's title and its items
GAP = 14  # between two items of a row
FRAME = 4  # light frame around an item's thumbnails
INNER = 4  # between the thumbnails of one item
LINE_GAP = 3
BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)
MUTED = (100, 100, 100)
FRAME_FILL = (232, 232, 236)
TILE = (24, 24, 28)
UNREADABLE_TILE = (150, 150, 150)
RULE = (205, 205, 205)
MIN_WIDTH = 400


@dataclass(frozen=True)
class SheetRow:
    """One band of the sheet.

    ``items`` are tuples of image paths relative to the sheet's root: a pair ``(a, b)``
    for a row of links, or a one-path tuple per member for a group row. ``captions`` has
    one caption per item (e.g. ``"score 0.97"``); it may be shorter, or hold empty strings.
    """

    title: str
    items: list[tuple[str, ...]]
    captions: list[str]


@functools.cache
def _font(size: int) -> Font:
    """Pillow's default font at ``size`` (Pillow >= 10.1 with FreeType), else the bitmap one."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _mask(font: Font, char: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(char)
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=4096)
def _has_glyph(size: int, char: str) -> bool:
    """Whether the default font at ``size`` draws ``char`` (rather than its missing-glyph box)."""
    font = _font(size)
    return char.isspace() or _mask(font, char) != _mask(font, "\U0010fffd")


def _printable(text: str, font: Font) -> str:
    """``text`` as ``font`` can draw it: accents dropped where the font lacks the letter
    ("ñ" -> "n"), "?" for what it cannot draw at all (the default fonts are Latin only)."""
    if isinstance(font, ImageFont.FreeTypeFont):
        size = int(font.size)
        def drawable(c: str) -> bool:
            return _has_glyph(size, c)
    else:  # Pillow's bitmap font: Latin-1, no ellipsis
        text = text.replace("…", "...")
        def drawable(c: str) -> bool:
            return ord(c) < 256
    out = []
    for char in text:
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        if drawable(char):
            out.append(char)
        elif base and all(drawable(c) for c in base):
            out.append(base)
        else:
            out.append("?")
    return "".join(out)


def _fit(text: str, font: Font, width: int) -> str:
    """``text``, cut and ended with an ellipsis where it is wider than ``width`` pixels."""
    text = _printable(text, font)
    if font.getlength(text) <= width:
        return text
    ellipsis = _printable("…", font)
    while text and font.getlength(text + ellipsis) > width:
        text = text[:-1]
    return text + ellipsis


def _line_height(font: Font) -> int:
    box = font.getbbox("Hgñ|")
    return int(box[3]) + LINE_GAP


def _thumbnail(path: Path, thumb: int, font: Font) -> Image.Image:
    """``path`` fitted inside ``thumb`` x ``thumb`` on a dark tile; a grey tile if unreadable."""
    try:
        rgb, _, _ = open_rgb(path)
    except UnreadableImage:
        tile = Image.new("RGB", (thumb, thumb), UNREADABLE_TILE)
        label = _fit("unreadable", font, thumb - 4)
        draw = ImageDraw.Draw(tile)
        x = (thumb - font.getlength(label)) / 2
        draw.text((x, thumb / 2 - _line_height(font) / 2), label, fill=TEXT, font=font)
        return tile
    tile = Image.new("RGB", (thumb, thumb), TILE)
    width, height = rgb.size
    scale = thumb / max(width, height, 1)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    tile.paste(small, ((thumb - size[0]) // 2, (thumb - size[1]) // 2))
    return tile


@dataclass(frozen=True)
class _Band:
    """A row laid out: what is shown and how big it is."""

    title: str
    items: list[tuple[str, ...]]
    captions: list[str]
    item_width: int
    text_lines: int

    @property
    def width(self) -> int:
        n = len(self.items)
        return n * self.item_width + max(0, n - 1) * GAP

    def height(self, thumb: int, title_h: int, small_h: int) -> int:
        return title_h + PAD // 2 + thumb + 2 * FRAME + 2 + self.text_lines * small_h


def _band(row: SheetRow, thumb: int, max_items: int) -> _Band:
    single = all(len(item) == 1 for item in row.items)
    limit = max_items * 2 if single else max_items
    items = [tuple(item) for item in row.items[:limit]]
    captions = [(row.captions[i] if i < len(row.captions) else "") for i in range(len(items))]
    extra = len(row.items) - len(items)
    title = f"{row.title}  +{extra} more" if extra > 0 else row.title
    per_item = max((len(item) for item in items), default=1)
    item_width = per_item * thumb + max(0, per_item - 1) * INNER + 2 * FRAME
    # pair rows: each file name, then the caption; group rows: the name, then any caption
    lines = (1 if single else per_item) + (1 if any(captions) else 0)
    return _Band(title, items, captions, item_width, lines)


def contact_sheet(root: Path, rows: list[SheetRow], out: Path, *, thumb: int = 96,
                  max_items: int = 6) -> Path | None:
    """Draw ``rows`` of linked images under ``root`` into the PNG ``out``; return its path.

    Returns ``None`` and writes nothing when there is no row with an item. Unreadable
    images become grey "unreadable" tiles; rows longer than their limit (``max_items``
    pairs, ``2 * max_items`` group members) say "+N more" in their title.
    """
    bands = [_band(row, thumb, max_items) for row in rows if row.items]
    if not bands:
        return None
    title_font, small_font = _font(14), _font(11)
    title_h, small_h = _line_height(title_font), _line_height(small_font)
    width = max([MIN_WIDTH] + [b.width + 2 * PAD for b in bands]
                + [int(title_font.getlength(_printable(b.title, title_font))) + 2 * PAD + 1 for b in bands])
    heights = [b.height(thumb, title_h, small_h) for b in bands]
    height = PAD + sum(heights) + (len(bands) - 1) * (2 * PAD + 1) + PAD
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for index, (band, band_h) in enumerate(zip(bands, heights)):
        if index:
            draw.line([(PAD, y - PAD - 1), (width - PAD, y - PAD - 1)], fill=RULE, width=1)
        title = _fit(band.title, title_font, width - 2 * PAD - 1)
        for dx in (0, 1):  # drawn twice, one pixel apart: a bold-ish title in any font
            draw.text((PAD + dx, y), title, fill=TEXT, font=title_font)
        top = y + title_h + PAD // 2
        for i, (item, caption) in enumerate(zip(band.items, band.captions)):
            x = PAD + i * (band.item_width + GAP)
            draw.rectangle([x, top, x + band.item_width - 1, top + thumb + 2 * FRAME - 1], fill=FRAME_FILL)
            for k, rel in enumerate(item):
                tile = _thumbnail(root / rel, thumb, small_font)
                sheet.paste(tile, (x + FRAME + k * (thumb + INNER), top + FRAME))
            text_y = top + thumb + 2 * FRAME + 2
            for name in (Path(rel).name for rel in item):
                draw.text((x, text_y), _fit(name, small_font, band.item_width), fill=TEXT, font=small_font)
                text_y += small_h
            if caption:
                draw.text((x, text_y), _fit(caption, small_font, band.item_width), fill=MUTED, font=small_font)
        y += band_h + 2 * PAD + 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    sheet.save(tmp, format="PNG")
    durable_write(out)
    os.replace(tmp, out)
    return out


def embed_png(path: Path) -> str:
    """``path``'s bytes as a ``data:image/png;base64,...`` URI for a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")

