"""Pictures a person would rather look at than read: sample grids, strips and GIFs.

All take model-range images, floats in [-1, 1] shaped (N, C, H, W), and write with
Pillow. Small images are scaled up by an integer factor (nearest neighbour, so pixels
stay pixels) and captions are drawn with Pillow's bundled font.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from .errors import MinigenError


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped), on the CPU: pixel = (x + 1)·127.5."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_pil(x: torch.Tensor, scale: int = 1) -> Image.Image:
    """One image (C, H, W) in [-1, 1] -> a Pillow image, scaled up `scale` times."""
    arr = to_uint8(x).permute(1, 2, 0).numpy()                                     # (C, H, W) -> (H, W, C)
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, mode="L" if arr.shape[2] == 1 else "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) if scale > 1 else img


def mask_panel(keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An inpainting mask as a picture beside the images: keep (1, 1, H, W) in {0, 1} to
    (1, C, H, W) in [−1, 1], white where the model regenerates, black where it keeps."""
    return ((1 - keep) * 2 - 1).expand_as(like)


def _default_scale(h: int) -> int:
    return max(1, 64 // h)                      # 28 px -> 2x, 32 px -> 2x, 64 px and up -> 1x


def _atomic_write(path: str | Path, write) -> Path:
    """write(file) into a temporary file beside `path`, then rename it there: a reader never sees
    half a file. A failed write (a full disk) leaves nothing behind and is one line (MinigenError)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MinigenError(f"{path}: cannot write it ({e.strerror or type(e).__name__})") from None
    return path


def _atomic_save(img: Image.Image, path: str | Path, **kwargs) -> Path:
    path = Path(path)
    kind = path.suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
    return _atomic_write(path, lambda f: img.save(f, format=kind, **kwargs))


def make_grid(x: torch.Tensor, nrow: int | None = None, captions: list[str] | None = None,
              row_labels: list[str] | None = None, scale: int | None = None, pad: int = 2) -> Image.Image:
    """Tile (N, C, H, W) into a grid of `nrow` images per row, with an optional caption under
    each tile and an optional label at the left of each row."""
    n, _, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    scale = scale or _default_scale(h)
    font = ImageFont.load_default(size=max(10, 6 * scale))
    cap_h = font.size + 4 if captions else 0
    left = max((int(font.getlength(s)) for s in row_labels), default=0) + 8 if row_labels else 0
    tile_w, tile_h = w * scale + pad, h * scale + pad + cap_h
    grid = Image.new("RGB", (left + nrow * tile_w + pad, rows * tile_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        r, c = divmod(i, nrow)
        x0, y0 = left + pad + c * tile_w, pad + r * tile_h
        grid.paste(to_pil(x[i], scale).convert("RGB"), (x0, y0))
        if captions:
            draw.text((x0, y0 + h * scale + 1), captions[i], fill=(0, 0, 0), font=font)
    for r, label in enumerate(row_labels or []):
        draw.text((4, pad + r * tile_h + (h * scale - font.size) // 2), label, fill=(0, 0, 0), font=font)
    return grid


def save_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None, captions: list[str] | None = None,
              row_labels: list[str] | None = None, scale: int | None = None, text: dict | None = None) -> Path:
    """Write a grid of images as PNG (see make_grid); returns the path. `text` goes into the PNG
    as text chunks (key -> value), e.g. the command that made it, as other image tools do."""
    extra = {}
    if text and Path(path).suffix.lower() == ".png":
        extra["pnginfo"] = PngImagePlugin.PngInfo()
        for key, value in text.items():
            extra["pnginfo"].add_itxt(key, value)
    return _atomic_save(make_grid(x, nrow, captions, row_labels, scale), path, **extra)


def save_strip(frames: torch.Tensor, path: str | Path, captions: list[str] | None = None,
               scale: int | None = None) -> Path:
    """One row of frames (T, C, H, W), e.g. an image at evenly spaced diffusion steps,
    each captioned (e.g. "t=999")."""
    return save_grid(frames, path, nrow=len(frames), captions=captions, scale=scale)


def save_gif(frames: list[torch.Tensor], path: str | Path, duration_ms: int = 80,
             hold_last_ms: int = 1000, scale: int | None = None) -> Path:
    """An animated GIF: each frame is (C, H, W) or a batch (N, C, H, W) shown as a grid.
    The last frame is held a little longer so the result can be seen."""
    images = [make_grid(f if f.dim() == 4 else f[None], scale=scale) for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [hold_last_ms]
    return _atomic_save(images[0], path, save_all=True, append_images=images[1:],
                        duration=durations, loop=0)


COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def line_chart(panels: list[tuple[str, dict[str, list[float]]]], path: str | Path, xlabel: str = "",
               width: int = 420, height: int = 300) -> Path:
    """Side-by-side line plots drawn with Pillow (minigen does not depend on matplotlib).

    panels: [(title, {series name: y values at x = 0, 1, 2, ...}), ...]; one legend for all.
    """
    font = ImageFont.load_default(size=13)
    margin_l, margin_r, margin_t, margin_b = 56, 12, 28, 40
    img = Image.new("RGB", (width * len(panels), height + 22), "white")
    draw = ImageDraw.Draw(img)
    for p, (title, series) in enumerate(panels):
        x0, x1 = p * width + margin_l, (p + 1) * width - margin_r
        y0, y1 = margin_t, height - margin_b
        lo = min(min(v) for v in series.values())
        hi = max(max(v) for v in series.values())
        lo, hi = (lo - 1, hi + 1) if hi == lo else (lo, hi)
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 6), title, fill="black", font=font)
        for k in range(5):                                   # y ticks
            value = lo + (hi - lo) * k / 4
            y = y1 - (y1 - y0) * k / 4
            draw.line([x0 - 4, y, x0, y], fill="black")
            draw.text((p * width + 4, y - 7), f"{value:.2f}" if hi - lo >= 0.5 else f"{value:.3g}", fill="black", font=font)
        n = max(len(v) for v in series.values())
        for k in range(5):                                   # x ticks
            x = x0 + (x1 - x0) * k / 4
            draw.line([x, y1, x, y1 + 4], fill="black")
            draw.text((x - 10, y1 + 6), f"{round((n - 1) * k / 4)}", fill="black", font=font)
        draw.text(((x0 + x1) // 2 - 30, y1 + 22), xlabel, fill="black", font=font)
        for c, values in enumerate(series.values()):
            pts = [(x0 + (x1 - x0) * i / max(1, len(values) - 1), y1 - (y1 - y0) * (v - lo) / (hi - lo))
                   for i, v in enumerate(values)]
            draw.line(pts, fill=COLOURS[c % len(COLOURS)], width=2)
    names = list(panels[0][1])
    for c, name in enumerate(names):                         # legend along the bottom
        x = 10 + c * 120
        draw.line([x, height + 11, x + 24, height + 11], fill=COLOURS[c % len(COLOURS)], width=3)
        draw.text((x + 30, height + 3), name, fill="black", font=font)
    return _atomic_save(img, path)


# ---- samples for other tools: every image, at full precision of its pixels ----------------------

def save_npz(x: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None) -> Path:
    """Samples (N, C, H, W) in [-1, 1] as uint8 `images` (N, H, W, C), the layout evaluation tools
    read, with their class `labels` (N,) when given; written atomically."""
    arrays = {"images": to_uint8(x).permute(0, 2, 3, 1).numpy()}                # (N, C, H, W) -> (N, H, W, C)
    if labels is not None:
        arrays["labels"] = labels.detach().cpu().long().numpy()
    return _atomic_write(path, lambda f: np.savez(f, **arrays))


def save_pngs(x: torch.Tensor, folder: str | Path, names: list[str] | None = None) -> Path:
    """One PNG per sample, at its own size: FOLDER/00000[_name].png."""
    folder = Path(folder)
    for i, image in enumerate(x):
        suffix = f"_{names[i]}" if names else ""
        _atomic_save(to_pil(image), folder / f"{i:05d}{suffix.replace('/', '-').replace(' ', '-')}.png")
    return folder
