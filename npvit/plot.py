"""A tiny plotting helper on Pillow: colour maps, ticks, labelled axes, scatter plots and image grids.

Just enough to draw the paper's figures without matplotlib. Every function returns a
``PIL.Image`` (RGB, white background) built from NumPy arrays on the host, so figures
compose by stacking images (``hstack``, ``vstack``, ``titled``) and are saved with
``image.save(path)``. Sizes are in pixels; text uses Pillow's built-in font.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (120, 120, 120)
LIGHT = (225, 225, 225)
FONT_SIZE = 14

# matplotlib's viridis sampled at 9 points: dark blue (low) to yellow (high), perceptually even
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float32)
# matplotlib's tab10: distinct colours for categories (here: attention heads)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@lru_cache(maxsize=None)
def font(size: int = FONT_SIZE):
    """Pillow's built-in font at ``size`` pixels (its fixed bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def text_size(text: str, size: int = FONT_SIZE) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn at ``size``."""
    left, top, right, bottom = font(size).getbbox(text)
    return right - left, bottom - top


def draw_text(draw, xy, text, size=FONT_SIZE, anchor="mm", fill=BLACK):
    """Draw ``text`` with its box's point ``anchor`` (horizontal l/m/r, vertical t/m/b) at ``xy``."""
    f = font(size)
    left, top, right, bottom = f.getbbox(text)
    w, h = right - left, bottom - top
    dx = {"l": 0, "m": w / 2, "r": w}[anchor[0]]
    dy = {"t": 0, "m": h / 2, "b": h}[anchor[1]]
    draw.text((round(xy[0] - dx - left), round(xy[1] - dy - top)), text, font=f, fill=fill)


def vertical_text(text, size=FONT_SIZE, fill=BLACK) -> Image.Image:
    """``text`` turned 90 degrees anticlockwise (for a y-axis label), on white."""
    w, h = text_size(text, size)
    img = Image.new("RGB", (w + 4, h + 4), WHITE)
    draw_text(ImageDraw.Draw(img), (img.width / 2, img.height / 2), text, size, fill=fill)
    return img.rotate(90, expand=True)


def colormap(values, vmin=0.0, vmax=1.0) -> np.ndarray:
    """Viridis colours (..., 3) uint8 of ``values`` scaled from [vmin, vmax] (clipped) to [0, 1]."""
    t = np.clip((np.asarray(values, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    pos = t * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(pos).astype(np.int64), len(_VIRIDIS) - 2)
    frac = (pos - i)[..., None]
    rgb = _VIRIDIS[i] * (1.0 - frac) + _VIRIDIS[i + 1] * frac          # (..., 3)
    return np.rint(rgb).astype(np.uint8)


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(max_ticks - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    count = math.floor(hi / step + 1e-9) - first + 1
    return [round((first + k) * step, 10) for k in range(count)]


def nice_upper(hi: float, max_ticks: int = 6) -> float:
    """The smallest tick of ``nice_ticks(0, hi)``'s spacing at or above ``hi`` (> 0): an axis end."""
    ticks = nice_ticks(0.0, hi, max_ticks)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else hi
    return ticks[-1] if ticks[-1] >= hi * (1 - 1e-9) else ticks[-1] + step


def format_tick(value: float) -> str:
    """A tick value without needless digits: 2, 0.5, 12.5."""
    return f"{value:.6g}" if value != int(value) else str(int(value))


def upscale(array, factor: int) -> np.ndarray:
    """An image (H, W[, 3]) with each pixel repeated into a ``factor`` x ``factor`` block."""
    return np.repeat(np.repeat(np.asarray(array), factor, axis=0), factor, axis=1)


def to_rgb(array) -> np.ndarray:
    """An image as (H, W, 3) uint8: grey (H, W) or (H, W, 1) repeated into three channels."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


def hstack(images, gap: int = 10, align: str = "middle") -> Image.Image:
    """Images side by side on white, vertically aligned at their ``align`` ("top"/"middle"/"bottom")."""
    height = max(im.height for im in images)
    out = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1), height), WHITE)
    x = 0
    for im in images:
        y = {"top": 0, "middle": (height - im.height) // 2, "bottom": height - im.height}[align]
        out.paste(im, (x, y))
        x += im.width + gap
    return out


def vstack(images, gap: int = 10) -> Image.Image:
    """Images one above the other on white, centred horizontally."""
    width = max(im.width for im in images)
    out = Image.new("RGB", (width, sum(im.height for im in images) + gap * (len(images) - 1)), WHITE)
    y = 0
    for im in images:
        out.paste(im, ((width - im.width) // 2, y))
        y += im.height + gap
    return out


def wrap_text(text: str, width: float, size: int = FONT_SIZE) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a longer word keeps a line)."""
    lines = []
    for word in text.split(" "):
        if lines and text_size(lines[-1] + " " + word, size)[0] <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def titled(image: Image.Image, title: str, size: int = FONT_SIZE + 2, margin: int = 10) -> Image.Image:
    """``image`` with ``title`` centred above it and a white margin all round."""
    lines = title.split("\n")
    line_h = text_size("Ag", size)[1] + 6
    width = max([image.width] + [text_size(s, size)[0] for s in lines]) + 2 * margin
    out = Image.new("RGB", (width, image.height + line_h * len(lines) + 2 * margin), WHITE)
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw_text(draw, (width / 2, margin + k * line_h), line, size, anchor="mt")
    out.paste(image, ((width - image.width) // 2, margin + line_h * len(lines)))
    return out


def colorbar(vmin: float, vmax: float, height: int, label: str = "", width: int = 16) -> Image.Image:
    """A vertical viridis colour bar from ``vmin`` (bottom) to ``vmax`` (top) with ticks and a label."""
    ticks = nice_ticks(vmin, vmax, 5)
    tick_w = max(text_size(format_tick(t))[0] for t in ticks)
    pad = 8  # room for the top and bottom tick labels
    label_img = vertical_text(label) if label else None
    total_w = width + 6 + tick_w + 8 + (label_img.width if label_img else 0)
    out = Image.new("RGB", (total_w, height + 2 * pad), WHITE)
    ramp = colormap(np.linspace(vmax, vmin, height, dtype=np.float32), vmin, vmax)  # (height, 3), top = vmax
    out.paste(Image.fromarray(np.repeat(ramp[:, None], width, axis=1)), (0, pad))
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, pad, width - 1, pad + height - 1), outline=BLACK)
    for t in ticks:
        y = pad + (vmax - t) / (vmax - vmin) * (height - 1)
        draw.line((width, y, width + 4, y), fill=BLACK)
        draw_text(draw, (width + 6, y), format_tick(t), anchor="lm")
    if label_img:
        out.paste(label_img, (total_w - label_img.width, pad + (height - label_img.height) // 2))
    return out


def scatter_plot(series, *, xlim, ylim, xlabel, ylabel, title=None, xticks=None, yticks=None, hlines=(),
                 size=(720, 480), radius=4, lines=False) -> Image.Image:
    """A scatter plot with a frame, ticks, grid lines, axis labels and a legend.

    ``series``: a list of ``(label, xs, ys)``, each drawn as dots in its own ``PALETTE``
    colour (a label of None keeps it out of the legend); with ``lines`` each series' dots
    are also joined in the order given (a curve). ``hlines``: ``(y, label)`` reference
    lines, dashed grey. Ticks default to ``nice_ticks`` of the limits.
    """
    xticks = nice_ticks(*xlim) if xticks is None else xticks
    yticks = nice_ticks(*ylim) if yticks is None else yticks
    labels = [s[0] for s in series if s[0] is not None]
    ylabel_img = vertical_text(ylabel)
    ytick_w = max(text_size(format_tick(t))[0] for t in yticks)
    tick_h = text_size("0")[1]
    legend_w = (max(text_size(s)[0] for s in labels) + 40) if labels else 20
    left = 10 + ylabel_img.width + 8 + ytick_w + 10
    title_lines = wrap_text(title, size[0] - 20, FONT_SIZE + 2) if title else []
    line_h = text_size("Ag", FONT_SIZE + 2)[1] + 6
    top = (line_h * len(title_lines) + 18) if title else 16
    bottom = tick_h + 14 + text_size(xlabel)[1] + 14
    x0, y0, x1, y1 = left, top, size[0] - legend_w, size[1] - bottom
    img = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(img)

    def px(x):
        return x0 + (x - xlim[0]) / (xlim[1] - xlim[0]) * (x1 - x0)

    def py(y):
        return y1 - (y - ylim[0]) / (ylim[1] - ylim[0]) * (y1 - y0)

    for t in yticks:
        draw.line((x0, py(t), x1, py(t)), fill=LIGHT)
        draw.line((x0 - 5, py(t), x0, py(t)), fill=BLACK)
        draw_text(draw, (x0 - 8, py(t)), format_tick(t), anchor="rm")
    for t in xticks:
        draw.line((px(t), y1, px(t), y1 + 5), fill=BLACK)
        draw_text(draw, (px(t), y1 + 8), format_tick(t), anchor="mt")
    for y, label in hlines:
        for start in np.arange(x0, x1, 10.0):
            draw.line((start, py(y), min(start + 5, x1), py(y)), fill=GREY, width=2)
        if label:
            draw_text(draw, (x1 - 4, py(y) - 4), label, size=FONT_SIZE - 2, anchor="rb", fill=GREY)
    for k, (_, xs, ys) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        points = [(px(x), py(y)) for x, y in zip(np.asarray(xs, dtype=float).ravel(), np.asarray(ys, dtype=float).ravel())]
        if lines and len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for cx, cy in points:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour, outline=BLACK)
    draw.rectangle((x0, y0, x1, y1), outline=BLACK)
    draw_text(draw, ((x0 + x1) / 2, size[1] - 10), xlabel, anchor="mb")
    img.paste(ylabel_img, (10, int((y0 + y1) / 2 - ylabel_img.height / 2)))
    for k, line in enumerate(title_lines):  # centred on the image: a long title may be wider than the frame
        draw_text(draw, (size[0] / 2, 10 + k * line_h), line, size=FONT_SIZE + 2, anchor="mt")
    legend = [(label, PALETTE[k % len(PALETTE)]) for k, (label, _, _) in enumerate(series) if label is not None]
    for k, (label, colour) in enumerate(legend):
        cy = y0 + 10 + 20 * k
        draw.ellipse((x1 + 14 - radius, cy - radius, x1 + 14 + radius, cy + radius), fill=colour, outline=BLACK)
        draw_text(draw, (x1 + 24, cy), label, anchor="lm")
    return img


def image_grid(tiles, ncols: int, *, scale: int = 1, gap: int = 4, tile_labels=None, col_labels=None,
               row_labels=None, label_size: int = FONT_SIZE - 2) -> Image.Image:
    """Equal-sized images (each (h, w, 3) or (h, w) uint8) in rows of ``ncols``, each pixel
    shown as a ``scale`` x ``scale`` block.

    ``tile_labels``: a small caption above every tile; ``col_labels`` headings above the
    columns; ``row_labels`` text left of the rows.
    """
    tiles = [upscale(to_rgb(t), scale) for t in tiles]
    h, w = tiles[0].shape[:2]
    nrows = math.ceil(len(tiles) / ncols)
    cap = text_size("Ag", label_size)[1] + 6 if tile_labels else 0
    head = text_size("Ag")[1] + 10 if col_labels else 0
    side = max(text_size(s)[0] for s in row_labels) + 12 if row_labels else 0
    cell_w, cell_h = w + gap, h + gap + cap
    out = Image.new("RGB", (side + ncols * cell_w - gap, head + nrows * cell_h - gap), WHITE)
    draw = ImageDraw.Draw(out)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncols)
        x, y = side + c * cell_w, head + r * cell_h
        if tile_labels:
            draw_text(draw, (x + w / 2, y + cap - 4), tile_labels[k], size=label_size, anchor="mb")
        out.paste(Image.fromarray(tile), (x, y + cap))
    for c, label in enumerate(col_labels or ()):
        draw_text(draw, (side + c * cell_w + w / 2, head - 6), label, anchor="mb")
    for r, label in enumerate(row_labels or ()):
        draw_text(draw, (side - 10, head + r * cell_h + cap + h / 2), label, anchor="rm")
    return out


def heatmap_grid(maps, vmin: float, vmax: float, *, xlabel: str, ylabel: str, colorbar_label: str = "",
                 scale: int = 4, gap: int = 2, start=(1, 1)) -> Image.Image:
    """A (R, C) grid of small heat maps ``maps`` (R, C, h, w), viridis from ``vmin`` to ``vmax``,
    with a colour bar and the grid's rows and columns numbered along the axes, counting from
    ``start`` (first row, first column)."""
    maps = np.asarray(maps, dtype=np.float32)
    R, C, h, w = maps.shape
    cell_w, cell_h = w * scale + gap, h * scale + gap
    rgb = colormap(maps, vmin, vmax)                                       # (R, C, h, w, 3)
    rgb = np.repeat(np.repeat(rgb, scale, axis=2), scale, axis=3)          # (R, C, h s, w s, 3)
    rgb = np.pad(rgb, ((0, 0), (0, 0), (0, gap), (0, gap), (0, 0)), constant_values=255)  # (R, C, cell_h, cell_w, 3)
    mosaic = rgb.transpose(0, 2, 1, 3, 4).reshape(R * cell_h, C * cell_w, 3)[:-gap or None, :-gap or None]
    every = max(1, math.ceil(max(R, C) / 16))  # keep the numbers from crowding on a large grid
    ylabel_img = vertical_text(ylabel)
    row_names = [str(start[0] + r) for r in range(R)]
    col_names = [str(start[1] + c) for c in range(C)]
    tick_w = max(text_size(n)[0] for n in row_names)
    left = ylabel_img.width + 12 + tick_w + 8
    tick_h = text_size("0")[1]
    bottom = tick_h + 12 + text_size(xlabel)[1] + 10
    panel = Image.new("RGB", (left + mosaic.shape[1], mosaic.shape[0] + bottom), WHITE)
    panel.paste(Image.fromarray(mosaic), (left, 0))
    draw = ImageDraw.Draw(panel)
    for c in range(0, C, every):
        draw_text(draw, (left + c * cell_w + w * scale / 2, mosaic.shape[0] + 6), col_names[c], anchor="mt")
    for r in range(0, R, every):
        draw_text(draw, (left - 8, r * cell_h + h * scale / 2), row_names[r], anchor="rm")
    draw_text(draw, (left + mosaic.shape[1] / 2, panel.height - 6), xlabel, anchor="mb")
    panel.paste(ylabel_img, (4, (mosaic.shape[0] - ylabel_img.height) // 2))
    bar = colorbar(vmin, vmax, max(mosaic.shape[0], 120), colorbar_label)
    return hstack([panel, bar], gap=16, align="top")
