"""Contextual layer-0 rows for the transplant, without a forward pass through
the layers: layer 0 of a BERT (hidden_states[0], what `xlembed encode
--layer 0` stores) is LayerNorm(word piece + position + token type) per
piece, so each English occurrence's vector is the mean of that over its
pieces, computed here by the model's own embedding module. Each Chinese
word's row is the mean over its chosen links (the build's rule), filled and
shrunk as the write stage does: the same rows as encode --layer 0, project,
write, then `transplant --rows matrix`.

    python bench/transplant_layer0.py --work WORK --heldout HELDOUT [--out OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transplant as tb  # noqa: E402
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout  # noqa: E402

from xlembed.config import Oov, Strategy  # noqa: E402
from xlembed.io import read_lines  # noqa: E402
from xlembed.layout import WorkDir  # noqa: E402
from xlembed.models import default_model_dir, load_encoder, load_tokenizer  # noqa: E402
from xlembed.project import ProjectedWord, link_plan  # noqa: E402
from xlembed.transplant import SPECIALS, LinkRule, TransplantRows, special_rows  # noqa: E402
from xlembed.write import build_matrix  # noqa: E402


@torch.no_grad()
def layer0_occurrences(model_dir: Path, sentences: list[list[str]], batch_size: int = 256) -> torch.Tensor:
    """[n_words, d]: each English word occurrence's layer-0 vector (mean over its pieces)."""
    tokenizer, embeddings = load_tokenizer(model_dir), load_encoder(model_dir).embeddings
    out = []
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start : start + batch_size]
        enc = tokenizer(
            batch, is_split_into_words=True, padding=True, truncation=True, max_length=512, return_tensors="pt"
        )
        hidden = embeddings(input_ids=enc["input_ids"], token_type_ids=torch.zeros_like(enc["input_ids"]))  # [b, t, d]
        for b, words in enumerate(batch):
            word_ids = enc.word_ids(b)
            pieces = torch.tensor([w for w in word_ids if w is not None])
            rows = hidden[b][[i for i, w in enumerate(word_ids) if w is not None]]
            sums = torch.zeros((len(words), hidden.shape[2])).index_add_(0, pieces, rows)
            out.append(sums / torch.bincount(pieces, minlength=len(words)).clamp(min=1).unsqueeze(1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--name", default="tatoeba")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model_dir = default_model_dir()
    work = WorkDir(args.work)
    plan = link_plan(work, LinkRule(Strategy.argmax_occurrence, None))
    sentences = [line.split(" ") for line in read_lines(work.corpus_en)]
    occurrences = layer0_occurrences(model_dir, sentences)  # [n_words, d]
    n_zh = len(plan.vocab.zh_vocab)
    ids = torch.from_numpy(plan.links.link_words)
    sums = torch.zeros((n_zh, occurrences.shape[1]), dtype=torch.float64).index_add_(
        0, ids, occurrences[torch.from_numpy(plan.links.link_positions)].double()
    )
    counts = torch.bincount(ids, minlength=n_zh)
    best = plan.lexicon.best
    zh_words = [
        ProjectedWord(w, plan.vocab.zh_freq[w], best[w].en if w in best else "", best[w].p if w in best else 0.0)
        for w in plan.vocab.zh_vocab
    ]
    words = [w.word for w in zh_words]  # the write stage's defaults: every corpus word, --oov random, --shrink 1
    _, rows, _, provenance = build_matrix(zh_words, sums, counts, 1, 1, 0, Oov.random, words, 1.0)
    embedding = load_encoder(model_dir).get_input_embeddings().weight.detach()
    chinese = TransplantRows(
        list(SPECIALS) + words,
        [0] * len(SPECIALS) + [w.freq for w in zh_words],
        torch.cat([special_rows(load_tokenizer(model_dir), embedding).float(), rows]),
        ["special"] * len(SPECIALS) + [r.source for r in provenance],
    )
    directory = tb.saved(f"{args.name}-layer0", chinese, model_dir)
    pairs = read_heldout(args.heldout)
    english = english_sentence_vectors(model_dir, [p.en for p in pairs])
    results = {
        "transplant, layer-0 rows": precision_at_1(
            tb.transplant_vectors(directory, [p.zh for p in pairs]), english
        )._asdict(),
        "transplant, layer-0 rows, jieba": precision_at_1(
            tb.transplant_vectors(directory, [p.zh for p in pairs], jieba=True), english
        )._asdict(),
    }
    result = dict(
        command=" ".join(sys.argv),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        build=args.name,
        results=results,
    )
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
