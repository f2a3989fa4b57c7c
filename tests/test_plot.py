"""The default map: content words with confident translations, labels that do not overlap, and a page
that renders in a real browser (where one is installed)."""

import importlib.util
import random
import subprocess

import pytest

import xlembed
from xlembed.plot import Label, choose_words, layout, overlapping_pairs, place, plot_map, repel

from .conftest import REPO
from .test_cli import built, corpus  # noqa: F401  (fixtures: a tiny-model build of a small corpus)


def test_the_default_map_shows_content_words_not_function_words_or_punctuation(built):
    e = xlembed.load(built)
    chosen = choose_words(e, None, 60)
    rows = {r.word: r for r in e.rows}
    assert chosen and not {"我", "你", "他", "她", "我们", "他们", "。"} & set(chosen)  # pronouns and punctuation
    assert all(rows[w].p >= 0.3 and rows[w].aligned_en.isalpha() for w in chosen)
    assert set(chosen) <= {"猫", "狗", "书", "水", "茶", "鱼", "喜欢", "读", "读书"}
    frequencies = [rows[w].freq for w in chosen]
    assert frequencies == sorted(frequencies, reverse=True)
    assert choose_words(e, ["我", "猫"], 60) == ["我", "猫"]  # --words: as given


def test_labels_are_pushed_apart_until_none_overlap():
    rng = random.Random(0)
    piled = [
        Label(500.0 + rng.uniform(0, 20), 300.0 + rng.uniform(0, 10), 40.0, 18.0) for _ in range(30)
    ]  # thirty in 20 x 10 px
    assert overlapping_pairs(piled) == 30 * 29 // 2
    spread = repel(piled, 1100, 760, 60)
    assert overlapping_pairs(spread) == 0
    assert all(30 <= b.x and b.x + b.width <= 1070 and 60 <= b.y and b.y + b.height <= 745 for b in spread)


def test_the_map_of_a_build_has_no_overlapping_labels(built):
    e = xlembed.load(built)
    points, _ = layout(e, [w for w in e.words if w not in ("[PAD]", "[UNK]")], english=True)
    _, labels = place(points, 1100, 760, 60)
    assert len(labels) == len(points) > 20 and overlapping_pairs(labels) == 0


def _bench_screenshot():
    spec = importlib.util.spec_from_file_location("plot_screenshot", REPO / "bench" / "plot_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(_bench_screenshot().find_browser() is None, reason="no Chromium here (apt-get install chromium)")
def test_the_html_map_renders_in_a_headless_browser(built, tmp_path):
    bench = _bench_screenshot()
    plot_map(xlembed.load(built), tmp_path / "map.html")
    try:
        bench.screenshot(bench.find_browser(), tmp_path / "map.html", tmp_path / "map.png", width=700, height=520)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"the browser failed: {e.stderr[-500:]}")
    counts = bench.colour_counts(tmp_path / "map.png")
    assert (counts["width"], counts["height"]) == (700, 520)
    assert counts["not_white"] > 0.005 * counts["pixels"] and counts["zh"] > 50 and counts["en"] > 50
