"""Probes for `xlembed transplant --distill`: other losses and character
rows, measured on validation pairs drawn from the build corpus (never
trained on here) and, once at the end, on the held-out pairs.

    python bench/distill_probe.py --out OUT --work WORK --heldout HELDOUT.tsv \
        [--loss mse|cos|nce|mse+nce] [--nce-weight 0.1] [--tau 0.05] [--chars] [--char-dropout 0.1] \
        [--epochs 1] [--lr 2e-3] [--layers-lr 0] [--cache DIR] [--json FILE]

- mse: the mean squared error to the English model's sentence embedding of
  the translation (the command's loss until 2026-12-04).
- cos: one minus the cosine to that embedding (retrieval ranks by cosine);
  the command's loss since 2026-12-04 (pipeline/distill.py cosine_distance).
- nce: InfoNCE over the batch (the Chinese sentence against the English
  embeddings of the batch's pairs, cosine / tau), both directions.
- --chars: every character that occurs inside the build's words but is not a
  word gets a row (bench/transplant_chars.py's rule), so a word outside the
  vocabulary splits into characters instead of [UNK]; --char-dropout P then
  splits each multi-character token of a training sentence into its
  characters with probability P, so those rows are trained too.
- --layers-lr LR: the Transformer layers train too, at LR (the rows keep
  --lr); the command trains the rows only.
Validation: the first 1,000 of a seeded shuffle of the build corpus's
distinct pairs (seed 0), left out of training.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout  # noqa: E402
from transplant_chars import with_character_rows  # noqa: E402

from xlembed.distill import (  # noqa: E402
    DistillOptions,
    corpus_pairs,
    padded,
    pool,
    schedule,
    teacher_embeddings,
    token_ids,
    train_steps,
)
from xlembed.layout import WorkDir  # noqa: E402
from xlembed.models import default_model_dir, load_encoder, load_tokenizer  # noqa: E402
from xlembed.progress import Reporter  # noqa: E402
from xlembed.transplant import transplant_rows, transplanted_model  # noqa: E402


def cached(path: Path | None, compute):
    if path is not None and path.exists():
        return torch.load(path)
    value = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(value, path)
    return value


def loss_of(predicted, target, loss: str, nce_weight: float, tau: float) -> torch.Tensor:
    """predicted, target [b, d]."""
    total = predicted.new_zeros(())
    if "mse" in loss:
        total = total + F.mse_loss(predicted, target)
    if loss == "cos":
        total = total + (1 - F.cosine_similarity(predicted, target, dim=1)).mean()
    if "nce" in loss:
        logits = F.normalize(predicted, dim=1) @ F.normalize(target, dim=1).T / tau  # [b, b]
        gold = torch.arange(len(logits))
        nce = (F.cross_entropy(logits, gold) + F.cross_entropy(logits.T, gold)) / 2
        total = total + (nce_weight if "mse" in loss else 1.0) * nce
    return total


def char_split(ids: list[int], pieces: dict[int, list[int]], p: float, rng: random.Random) -> list[int]:
    out = []
    for i in ids:
        out += pieces[i] if i in pieces and rng.random() < p else [i]
    return out


def dropped(ids: list[int], pieces: dict[int, list[int]], args, rng: random.Random, tokenizer) -> list[int]:
    """A training sentence's ids as trained this step: words split into characters (--char-dropout),
    then words (never [CLS]/[SEP]) replaced by [UNK] (--unk-dropout), as unseen words are at test time."""
    if pieces:
        ids = char_split(ids, pieces, args.char_dropout, rng)
    if args.unk_dropout:
        special = set(tokenizer.all_special_ids)
        ids = [tokenizer.unk_token_id if i not in special and rng.random() < args.unk_dropout else i for i in ids]
    return ids


@torch.no_grad()
def student_vectors(model, tokenizer, texts: list[str], batch_size: int = 128) -> torch.Tensor:
    model.eval()
    ids = token_ids(tokenizer, texts, 128)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.zeros((len(ids), model.config.hidden_size))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        out[chunk] = pool(model, *padded([ids[i] for i in chunk], tokenizer.pad_token_id), "mean").float()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--loss", default="mse", choices=["mse", "cos", "nce", "mse+nce"])
    parser.add_argument("--nce-weight", type=float, default=0.1)
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--chars", action="store_true")
    parser.add_argument("--char-dropout", type=float, default=0.0)
    parser.add_argument("--unk-dropout", type=float, default=0.0,
                        help="each word of a training sentence becomes [UNK] with this probability")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--layers-lr", type=float, default=0.0,
                        help="train the Transformer layers too, at this learning rate; 0: frozen")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="a folder for the English embeddings (shared by runs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.time()
    model_dir = default_model_dir()
    work = WorkDir(args.work)
    chinese = transplant_rows(args.out, work, model_dir)
    if args.chars:
        chinese = with_character_rows(chinese)
    student, tokenizer = transplanted_model(model_dir, chinese)
    options = DistillOptions(epochs=args.epochs, lr=args.lr)

    pairs = corpus_pairs(work)
    random.Random(0).shuffle(pairs)
    validation, train = pairs[:1000], pairs[1000:]
    teacher, teacher_tokenizer = load_encoder(model_dir).eval(), load_tokenizer(model_dir)
    reporter = Reporter(False)

    def english(texts):
        return teacher_embeddings(teacher, teacher_tokenizer, texts, 128, "mean", 128, reporter)

    cache = args.cache
    targets = cached(cache and cache / "train.pt", lambda: english([p.en for p in train]))  # [n, d]
    val_en = cached(cache and cache / "validation.pt", lambda: english([p.en for p in validation]))
    heldout = read_heldout(args.heldout)
    held_en = cached(
        cache and cache / "heldout.pt", lambda: english_sentence_vectors(model_dir, [p.en for p in heldout])
    )

    before = precision_at_1(student_vectors(student, tokenizer, [p.zh for p in validation]), val_en)
    print(f"validation before: {before}", flush=True)

    zh_ids = token_ids(tokenizer, [p.zh for p in train], options.max_length)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    index = {t: i for i, t in enumerate(vocab)}
    pieces = {}
    if args.char_dropout > 0:
        for i, token in enumerate(vocab):
            if len(token) > 1 and not token.startswith("[") and all(c in index for c in token):
                pieces[i] = [index[c] for c in token]
    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    rows = student.get_input_embeddings().weight
    layers = [p for p in student.parameters() if p is not rows]
    for parameter in student.parameters():
        parameter.requires_grad_(parameter is rows or args.layers_lr > 0)
    steps = max(1, round(options.epochs * -(-len(train) // options.batch_size)))
    groups = [dict(params=[rows], lr=options.lr)] + ([dict(params=layers, lr=args.layers_lr)] if args.layers_lr else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(steps))
    losses = train_steps(
        student, zh_ids, targets, steps, optimizer, scheduler, generator, options, "mean", reporter,
        loss_of=lambda predicted, target: loss_of(predicted, target, args.loss, args.nce_weight, args.tau),
        ids_of=(lambda ids: dropped(ids, pieces, args, rng, tokenizer)) if pieces or args.unk_dropout else None,
    )
    after = precision_at_1(student_vectors(student, tokenizer, [p.zh for p in validation]), val_en)
    held = precision_at_1(student_vectors(student, tokenizer, [p.zh for p in heldout]), held_en)
    result = dict(
        vars(args)
        | dict(
            out=str(args.out),
            work=str(args.work),
            heldout=str(args.heldout),
            cache=str(args.cache),
            json=str(args.json),
        ),
        vocab=len(vocab),
        char_pieces=len(pieces),
        train_pairs=len(train),
        steps=steps,
        loss_first=sum(losses[:20]) / len(losses[:20]),
        loss_last=sum(losses[-20:]) / len(losses[-20:]),
        validation_before=before._asdict(),
        validation=after._asdict(),
        heldout=held._asdict(),
        seconds=round(time.time() - began, 1),
        finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    print(json.dumps(result, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
