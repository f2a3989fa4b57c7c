"""Tried, not kept: character rows for the transplant. Every character that
occurs inside the build's words but is not a word itself gets a row, the
frequency-weighted mean of the rows of the words that contain it (frequency
0 for the tokenizer, so it is used only where no word fits), so that words
outside the vocabulary split into characters instead of [UNK].

    python bench/transplant_chars.py --out OUT --work WORK --heldout HELDOUT [--without]

Prints zh→en / en→zh P@1 on the held-out pairs (as bench/transplant.py retrieval).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout
from transplant import rows_for, saved, transplant_vectors

from xlembed.models import default_model_dir
from xlembed.transplant import SPECIALS, TransplantRows


def with_character_rows(chinese: TransplantRows) -> TransplantRows:
    known, n = set(chinese.tokens), len(SPECIALS)
    sums: dict[str, torch.Tensor] = {}
    weights: dict[str, int] = {}
    for token, freq, row in zip(chinese.tokens[n:], chinese.freqs[n:], chinese.rows[n:]):
        for c in set(token) - known:
            if not c.isspace():
                sums[c] = sums.get(c, 0) + max(freq, 1) * row
                weights[c] = weights.get(c, 0) + max(freq, 1)
    chars = sorted(sums)
    print(f"{len(chars)} character rows", flush=True)
    return TransplantRows(
        chinese.tokens + chars,
        chinese.freqs + [0] * len(chars),
        torch.cat([chinese.rows, torch.stack([sums[c] / weights[c] for c in chars])]),
        chinese.sources + ["chars"] * len(chars),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--without", action="store_true", help="the plain transplant, for the same-run baseline")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_dir = default_model_dir()
    chinese = rows_for(args.out, args.work, model_dir)
    name = "chars-plain" if args.without else "chars"
    dest = saved(name, chinese if args.without else with_character_rows(chinese), model_dir)
    pairs = read_heldout(args.heldout)
    english = english_sentence_vectors(model_dir, [p.en for p in pairs])
    result = precision_at_1(transplant_vectors(dest, [p.zh for p in pairs]), english)
    print(f"{name}: zh→en {result.zh_to_en:.3f}  en→zh {result.en_to_zh:.3f}")


if __name__ == "__main__":
    main()
