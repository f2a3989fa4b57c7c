"""A picture of the space: a 2-D map of Chinese words and their aligned
English words, by PCA of their unit vectors (cosine geometry), written as
SVG (text labels, so CJK renders with the viewer's fonts), as a
self-contained HTML page (the SVG inline, hover titles; opens offline), or
as PNG (matplotlib with a CJK font, when both are installed)."""
from __future__ import annotations

import html
import re
from pathlib import Path

import torch

from .config import PAD, UNK
from .embeddings import Embeddings
from .errors import XlembedError
from .io import write_text_atomic

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
FONTS = "'Noto Sans CJK SC', 'Source Han Sans SC', 'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif"
ZH_COLOUR, EN_COLOUR = "#1f5fa8", "#c8541b"


def choose_words(e: Embeddings, words: list[str] | None, top: int) -> list[str]:
    """The Chinese words to show: `words` as given (each must have a row), or
    the `top` most frequent projected words written with Chinese characters."""
    if words is not None:
        missing = [w for w in words if w not in e]
        if missing:
            raise XlembedError(
                f"not in the vocabulary: {', '.join(missing[:10])}" + (" …" if len(missing) > 10 else "")
            )
        return words
    chosen = [w for w, p in zip(e.words, e.projected.tolist()) if p and w not in (PAD, UNK) and CJK.search(w)]
    return chosen[:top]


def layout(
    e: Embeddings, zh_words: list[str], english: bool
) -> tuple[list[tuple[str, str, float, float]], list[tuple[int, int]]]:
    """Points (label, lang, x, y) from a PCA of the chosen words' unit
    vectors and of their aligned English words; lines join each Chinese word
    to its English word."""
    aligned = {r.word: r.aligned_en for r in e.rows}
    points = [(w, "zh") for w in zh_words]
    en_of = {}
    if english:
        for w in zh_words:
            en = aligned.get(w, "")
            if en and en in e.english_index:
                if en not in en_of:
                    en_of[en] = len(points)
                    points.append((en, "en"))
    vectors = torch.stack([e.unit_vectors[e.index(w)] if lang == "zh" else e.english_unit_vectors[e.index(w, "en")]
                           for w, lang in points]).double()  # [N, d]
    centred = vectors - vectors.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)  # v: [min(N, d), d], principal axes by variance
    xy = centred @ v[:2].T if len(points) > 1 else torch.zeros((len(points), 2), dtype=torch.float64)  # [N, 2]
    if xy.shape[1] < 2:
        xy = torch.cat([xy, torch.zeros((len(points), 2 - xy.shape[1]), dtype=torch.float64)], 1)
    lines = [(i, en_of[aligned[w]]) for i, (w, lang) in enumerate(points) if lang == "zh" and aligned.get(w) in en_of]
    return [(w, lang, float(x), float(y)) for (w, lang), (x, y) in zip(points, xy.tolist())], lines


def svg(points, lines, title: str, width: int = 1100, height: int = 760) -> str:
    margin = 60
    xs, ys = [p[2] for p in points], [p[3] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 2 * margin) / ((x1 - x0) or 1.0)
    sy = (height - 2 * margin) / ((y1 - y0) or 1.0)

    def at(x, y):
        return margin + (x - x0) * sx, height - margin - (y - y0) * sy

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'font-family="{FONTS}">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{margin}" y="32" font-size="20" fill="#222">{html.escape(title)}</text>',
           f'<text x="{width - margin}" y="32" font-size="15" text-anchor="end">'
           f'<tspan fill="{ZH_COLOUR}">● Chinese</tspan>  <tspan fill="{EN_COLOUR}">● English (aligned)</tspan></text>']
    for i, j in lines:
        (ax, ay), (bx, by) = at(*points[i][2:]), at(*points[j][2:])
        out.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" stroke="#bbb" stroke-width="0.8"/>')
    for word, lang, x, y in points:
        px, py = at(x, y)
        colour = ZH_COLOUR if lang == "zh" else EN_COLOUR
        label = html.escape(word)
        out.append(
            f"<g><title>{label} ({'Chinese' if lang == 'zh' else 'English'})</title>"
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>'
            + (
                f'<text x="{px + 5:.1f}" y="{py - 4:.1f}" font-size="15" fill="{colour}">{label}</text></g>'
                if lang == "zh"
                else f'<text x="{px - 5:.1f}" y="{py + 14:.1f}" font-size="13" fill="{colour}" '
                f'text-anchor="end">{label}</text></g>'
            )
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def page(svg_text: str, title: str, note: str) -> str:
    return (
        '<!doctype html>\n<html lang="zh"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:" + FONTS.replace("'", "") + ";margin:2em;color:#222}svg{max-width:100%;height:auto}"
        "p{color:#555}</style></head><body>\n"
        f"{svg_text}<p>{html.escape(note)}</p>\n</body></html>\n"
    )


def plot_map(e: Embeddings, output: Path, words: list[str] | None = None, top: int = 60, english: bool = True) -> int:
    """Write the map to `output` (.html, .svg or .png); returns how many words it shows."""
    output = Path(output)
    kind = output.suffix.lower()
    if kind not in (".html", ".htm", ".svg", ".png"):
        raise XlembedError(f"{output}: the picture must be .html, .svg or .png")
    if output.is_dir():
        raise XlembedError(f"{output}: is a directory; give a file name")
    zh_words = choose_words(e, words, top)
    if not zh_words:
        raise XlembedError("no words to show")
    points, lines = layout(e, zh_words, english)
    source = e.path.name if e.path else "matrix"
    title = f"{source}: {len(zh_words)} Chinese words" + (
        f" and {len(points) - len(zh_words)} aligned English words" if english else ""
    )
    note = (f"PCA of the unit vectors (cosine geometry) of {len(points)} words; grey lines join a Chinese word to its "
            "most probable English translation. Hover a point for its word.")
    if kind == ".png":
        _png(points, lines, title, output)
    else:
        picture = svg(points, lines, title)
        write_text_atomic(output, picture if kind == ".svg" else page(picture, title, note))
    return len(points)


def _png(points, lines, title: str, output: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import font_manager
        from matplotlib import pyplot as plt
    except ImportError:
        raise XlembedError("a .png map needs matplotlib (pip install matplotlib); .svg and .html need nothing")
    cjk = [
        f.name
        for f in font_manager.fontManager.ttflist
        if re.search(r"CJK|Han Sans|WenQuanYi|Hei|Droid Sans Fallback", f.name)
    ]
    if not cjk:
        raise XlembedError(
            "a .png map needs a font with Chinese characters (e.g. Debian's fonts-noto-cjk); .svg and .html need none"
        )
    from .io import atomic_path

    plt.rcParams["font.family"] = [cjk[0], "sans-serif"]
    figure, axes = plt.subplots(figsize=(11, 7.6), dpi=120)
    for i, j in lines:
        axes.plot([points[i][2], points[j][2]], [points[i][3], points[j][3]], color="#bbbbbb", linewidth=0.6, zorder=1)
    for word, lang, x, y in points:
        colour = ZH_COLOUR if lang == "zh" else EN_COLOUR
        axes.scatter([x], [y], s=8, color=colour, zorder=2)
        axes.annotate(word, (x, y), xytext=(3, 3) if lang == "zh" else (-3, -10), textcoords="offset points",
                      fontsize=10 if lang == "zh" else 8, color=colour, ha="left" if lang == "zh" else "right")
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    with atomic_path(output) as tmp:
        figure.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(figure)
