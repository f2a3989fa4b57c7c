"""A picture of the space: a 2-D map of Chinese words and their aligned
English words, by PCA of their unit vectors (cosine geometry), written as
SVG (text labels, so CJK renders with the viewer's fonts), as a
self-contained HTML page (the SVG inline, hover titles; opens offline), or
as PNG (matplotlib with a CJK font, when both are installed)."""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .config import PAD, UNK
from .embeddings import Embeddings
from .errors import XlembedError
from .io import write_text_atomic

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
CJK_ONLY = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
FONTS = "'Noto Sans CJK SC', 'Source Han Sans SC', 'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif"
ZH_COLOUR, EN_COLOUR = "#1f5fa8", "#c8541b"


# jieba's part-of-speech tags of content words: nouns, names, places, verbs, adjectives, times, idioms
CONTENT_TAGS = {"n", "nr", "ns", "nt", "nz", "ng", "nrt", "vn", "v", "a", "an", "ad", "t", "s", "i", "l"}
# English function words: a Chinese word aligned to one of them is not a content word (是 → is, 能 → can)
EN_FUNCTION_WORDS = set("""a an the and or but if of to in on at by for with from as into about than then so not no
t s don doesn didn isn aren wasn can could will would shall should must may might
do does did done be is are was were been
being am have has had get got go going i you he she it we they me him her us them my your his its our their this that
these those what who whom which where when why how there here all any some very too also just only more most much many
one lot thing things yes okay ok please""".split())
MIN_P = 0.3  # p(aligned English word | Chinese word) of a confident translation


def content_words(e: Embeddings) -> list[str]:
    """Projected Chinese content words whose translation is confident, most
    frequent first: written in Chinese characters only (no punctuation), a
    noun, verb, adjective or name by jieba's dictionary, aligned with
    p(en|zh) >= MIN_P to an English word that is not a function word."""
    import logging

    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    chosen = []
    for row, projected in zip(e.rows, e.projected.tolist()):
        if not projected or row.p < MIN_P or not CJK_ONLY.fullmatch(row.word):
            continue
        if not row.aligned_en.isalpha() or row.aligned_en.lower() in EN_FUNCTION_WORDS:
            continue
        tags = [pair.flag for pair in jieba.posseg.lcut(row.word, HMM=False)]
        if len(tags) == 1 and tags[0] in CONTENT_TAGS:
            chosen.append(row.word)
    return chosen


def choose_words(e: Embeddings, words: list[str] | None, top: int) -> list[str]:
    """The Chinese words to show: `words` as given (each must have a row), or
    the `top` most frequent content words with a confident translation
    (see content_words), or, for a matrix without provenance rows, the most
    frequent projected words written with Chinese characters."""
    if words is not None:
        missing = [w for w in words if w not in e]
        if missing:
            raise XlembedError(
                f"not in the vocabulary: {', '.join(missing[:10])}" + (" …" if len(missing) > 10 else "")
            )
        return words
    if e.rows:
        return content_words(e)[:top]
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


class Label(NamedTuple):
    """A label's box in picture coordinates (x, y: its top-left corner)."""

    x: float
    y: float
    width: float
    height: float


def label_size(word: str, font_size: float) -> tuple[float, float]:
    """Approximate box of a label: a CJK character is about one em wide, a Latin one about 0.6 em."""
    return sum(font_size if CJK.match(ch) else 0.6 * font_size for ch in word) + 6, font_size * 1.3


def overlapping_pairs(labels: list[Label]) -> int:
    """How many pairs of labels overlap."""
    if len(labels) < 2:
        return 0
    return int(np.triu(_overlaps(np.array(labels, dtype=np.float64))[0], 1).sum())


def _overlaps(box: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pairwise overlap of boxes [N, 4]: (mask [N, N], ox, oy, dx, dy) with
    ox, oy the overlap along each axis and dx, dy the centre offsets."""
    cx, cy = box[:, 0] + box[:, 2] / 2, box[:, 1] + box[:, 3] / 2  # [N]
    dx, dy = cx[:, None] - cx[None, :], cy[:, None] - cy[None, :]  # [N, N]
    ox = (box[:, 2][:, None] + box[:, 2][None, :]) / 2 - np.abs(dx)
    oy = (box[:, 3][:, None] + box[:, 3][None, :]) / 2 - np.abs(dy)
    mask = (ox > 0) & (oy > 0) & ~np.eye(len(box), dtype=bool)
    return mask, ox, oy, dx, dy


def repel(labels: list[Label], width: float, height: float, margin: float, steps: int = 2000) -> list[Label]:
    """Push overlapping labels apart (each pair along the axis where they
    overlap least, half the overlap each) until none overlap or `steps` run
    out, keeping every label inside the picture's margins."""
    if len(labels) < 2:
        return labels
    box = np.array(labels, dtype=np.float64)  # [N, 4]
    order = np.arange(len(box), dtype=np.float64)
    tie = np.sign(order[:, None] - order[None, :])  # who moves which way when two centres coincide
    for _ in range(steps):
        mask, ox, oy, dx, dy = _overlaps(box)
        if not mask.any():
            break
        sx = np.where(dx != 0, np.sign(dx), tie)
        sy = np.where(dy != 0, np.sign(dy), tie)
        box[:, 0] += ((mask & (ox <= oy)) * sx * (ox / 2 + 0.5)).sum(1)
        box[:, 1] += ((mask & (ox > oy)) * sy * (oy / 2 + 0.5)).sum(1)
        box[:, 0] = np.minimum(np.maximum(box[:, 0], margin / 2), width - margin / 2 - box[:, 2])
        box[:, 1] = np.minimum(np.maximum(box[:, 1], margin), height - margin / 4 - box[:, 3])
    return [Label(*row) for row in box.tolist()]


def place(points, width: int, height: int, margin: int) -> tuple[list[tuple[float, float]], list[Label]]:
    """Each point's position in the picture, and its label's box: beside the
    point (Chinese above right, English below left), then repelled."""
    xs, ys = [p[2] for p in points], [p[3] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 2 * margin) / ((x1 - x0) or 1.0)
    sy = (height - 2 * margin) / ((y1 - y0) or 1.0)
    anchors = [(margin + (x - x0) * sx, height - margin - (y - y0) * sy) for _, _, x, y in points]
    labels = []
    for (word, lang, _, _), (px, py) in zip(points, anchors):
        w, h = label_size(word, 15 if lang == "zh" else 13)
        labels.append(Label(px + 4, py - h - 1, w, h) if lang == "zh" else Label(px - w - 4, py + 2, w, h))
    return anchors, repel(labels, width, height, margin)


def svg(points, lines, title: str, width: int = 1100, height: int = 760) -> str:
    margin = 60
    anchors, labels = place(points, width, height, margin)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'font-family="{FONTS}">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{margin}" y="32" font-size="20" fill="#222">{html.escape(title)}</text>',
           f'<text x="{width - margin}" y="32" font-size="15" text-anchor="end">'
           f'<tspan fill="{ZH_COLOUR}">● Chinese</tspan>  <tspan fill="{EN_COLOUR}">● English (aligned)</tspan></text>']
    for i, j in lines:
        (ax, ay), (bx, by) = anchors[i], anchors[j]
        out.append(f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" stroke="#ccc" stroke-width="0.8"/>')
    for (word, lang, _, _), (px, py), box in zip(points, anchors, labels):
        colour = ZH_COLOUR if lang == "zh" else EN_COLOUR
        label = html.escape(word)
        # a label pushed away from its point gets a thin leader to it
        near_x = min(max(px, box.x), box.x + box.width)
        near_y = min(max(py, box.y), box.y + box.height)
        leader = (f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{near_x:.1f}" y2="{near_y:.1f}" stroke="{colour}" '
                  f'stroke-width="0.5" opacity="0.6"/>') if abs(near_x - px) + abs(near_y - py) > 12 else ""
        out.append(f'<g><title>{label} ({"Chinese" if lang == "zh" else "English"})</title>{leader}'
                   f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>'
                   f'<text x="{box.x + 1:.1f}" y="{box.y + box.height * 0.8:.1f}" '
                   f'font-size="{15 if lang == "zh" else 13}" '
                   f'fill="{colour}">{label}</text></g>')
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
