"""The default map of a built matrix as a browser shows it: `xlembed plot OUT -o map.html`, then a
screenshot of the page in headless Chromium, checked: the page renders (the picture is not blank,
and both label colours are drawn) and no two labels overlap in the layout.

    python bench/plot_screenshot.py runs/demo --png map.png > map.json

Needs a Chromium (Debian: apt-get install chromium fonts-noto-cjk); exits 2 with one line without one.
PNG decoding uses only the standard library (zlib)."""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import xlembed
from xlembed.plot import EN_COLOUR, ZH_COLOUR, choose_words, layout, overlapping_pairs, place, plot_map

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def screenshot(browser: str, page: Path, png: Path, width: int = 1200, height: int = 900) -> None:
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def read_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of RGB(A) bytes, channels) of an 8-bit RGB or RGBA PNG, unfiltered."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), (
        f"{path}: expected 8-bit RGB or RGBA, got depth {depth} colour type {colour}"
    )
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, up_left = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows, channels


def colour_counts(png: Path) -> dict:
    """Pixels that are not white, and pixels close to each label colour."""
    width, height, rows, channels = read_png(png)
    targets = {
        name: tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        for name, hex_colour in (("zh", ZH_COLOUR), ("en", EN_COLOUR))
    }
    counts = {"not_white": 0, "zh": 0, "en": 0}
    for row in rows:
        for x in range(0, width * channels, channels):
            r, g, b = row[x], row[x + 1], row[x + 2]
            if r < 245 or g < 245 or b < 245:
                counts["not_white"] += 1
            for name, (tr, tg, tb) in targets.items():
                if abs(r - tr) + abs(g - tg) + abs(b - tb) < 40:
                    counts[name] += 1
    return dict(counts, width=width, height=height, pixels=width * height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="an output directory of xlembed run")
    parser.add_argument("--png", type=Path, required=True, help="where the screenshot goes")
    parser.add_argument("--top", type=int, default=60)
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        sys.exit("error: no Chromium found (apt-get install chromium fonts-noto-cjk)")
    e = xlembed.load(args.out)
    words = choose_words(e, None, args.top)
    points, _ = layout(e, words, english=True)
    _, labels = place(points, 1100, 760, 60)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "map.html"
        plot_map(e, page, None, args.top, True)
        screenshot(browser, page, args.png)
    counts = colour_counts(args.png)
    result = dict(
        out=str(args.out),
        browser=browser,
        words=words,
        points=len(points),
        overlapping_label_pairs=overlapping_pairs(labels),
        screenshot=str(args.png),
        **counts,
    )
    result["renders"] = counts["not_white"] > 0.005 * counts["pixels"] and counts["zh"] > 100 and counts["en"] > 100
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if not result["renders"] or result["overlapping_label_pairs"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
