"""What the matrix buys a Chinese model: classifiers whose embedding layer
starts from xlembed's rows, against random rows and against word2vec and
fastText trained on the same text, on labelled subsets of a task.

    # 1. each task's vocabulary (its training split, segmented by jieba as xlembed segments)
    python bench/downstream.py --write-vocab /tmp/dl                # /tmp/dl/waimai.vocab.txt, ...
    # 2. an xlembed matrix over that vocabulary (only the write stage; a copy of a build's work directory)
    xlembed write --work COPY_OF_WORK --out /tmp/dl/tat-chars-waimai --vocab /tmp/dl/waimai.vocab.txt --oov chars
    # 3. the grid
    python bench/downstream.py --xlembed tat-chars=/tmp/dl/tat-chars-{task} --corpus-zh WORK/corpus.zh \\
        [--task waimai --task shopping_cats] [--csv FILE --text COL --label COL] [--models bag,transformer] \\
        [--inits random,word2vec,fasttext,tat-chars] [--modes frozen,fine-tuned] [--sizes 100,1000,all] \\
        [--seeds 0,1,2] [--json FILE] [--markdown]

Tasks: bench/tasks.py's seeded split (the same test set for every
benchmark); a labelled subset is the first n of a seeded shuffle of the
training split. Every initialisation shares one vocabulary per task: [PAD],
[UNK], then the words of the training split's text (all of it, labelled or
not: the text a user has), most frequent first; test words outside it are [UNK].

Models: `bag` (mean of the words' rows, then a linear layer) and
`transformer` (the README's classifier: rows + sinusoidal positions, one
Transformer encoder layer, masked mean, linear). Embedding layer frozen or
fine-tuned. Initialisations: `random` (normal, scaled per dimension to the
mean and sd of a reference build's projected rows, as xlembed's random fill
draws), `word2vec` and `fasttext` (gensim skip-gram, the matrix's dimension,
trained on the task's training text plus --corpus-zh, a segmented Chinese
side), and any xlembed output built with --vocab = the task vocabulary.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import DEV_TASKS, Example, dev_task, labelled_subset, read_task, split_task  # noqa: E402

PAD, UNK = "[PAD]", "[UNK]"
BASE_INITS = ("random", "word2vec", "fasttext")


class Settings(NamedTuple):
    max_length: int = 64  # words per text
    epochs: int = 4
    min_steps: int = 60  # small subsets train at least this many steps
    batch_size: int = 32
    lr: float = 1e-3
    heads: int = 4
    ff: int = 512


class Cell(NamedTuple):
    task: str
    model: str  # bag | transformer
    init: str
    mode: str  # frozen | fine-tuned
    n: int | None  # labelled examples (None: all)
    seed: int
    accuracy: float
    seconds: float


class Data(NamedTuple):
    name: str
    vocab: list[str]
    train: list[Example]
    train_ids: list[list[int]]  # [N_train][<= max_length]
    test_ids: list[list[int]]
    test_labels: torch.Tensor  # [N_test]
    labels: list[str]
    train_tokens: list[list[str]]


# --- data -----------------------------------------------------------------------------------------


def segmenter():
    from xlembed.tokenize import chinese_splitter

    return chinese_splitter(None, True)  # xlembed's default segmentation


def prepare(task, max_length: int) -> Data:
    split = split_task(task)
    cut = segmenter()
    train_tokens = [cut(e.text) for e in split.train]
    freq = Counter(w for words in train_tokens for w in words)
    # a word xlembed's --vocab refuses (a private-use character, e.g. an emoji glyph: not printable) is [UNK]
    usable = {w: n for w, n in freq.items() if w.isprintable() and len(w.split()) == 1}
    vocab = [PAD, UNK] + [w for w, _ in sorted(usable.items(), key=lambda kv: (-kv[1], kv[0]))]
    index = {w: i for i, w in enumerate(vocab)}

    def ids(words: list[str]) -> list[int]:
        return [index.get(w, 1) for w in words][:max_length] or [1]

    return Data(
        task.name,
        vocab,
        split.train,
        [ids(w) for w in train_tokens],
        [ids(cut(e.text)) for e in split.test],
        torch.tensor([e.label for e in split.test]),
        split.labels,
        train_tokens,
    )


def batch(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, T] padded with 0, mask [B, T] True at words."""
    width = max(len(x) for x in ids)
    out = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
    return out, out != 0


# --- initialisations ------------------------------------------------------------------------------


def random_init(vocab: list[str], reference: torch.Tensor, seed: int) -> torch.Tensor:
    """[V, d] normal rows scaled per dimension to `reference`'s mean and sd (xlembed's random fill); [PAD] = 0."""
    g = torch.Generator().manual_seed(seed)
    mean, std = reference.double().mean(0), reference.double().std(0, unbiased=False)
    rows = (torch.randn((len(vocab), reference.shape[1]), generator=g, dtype=torch.float64) * std + mean).float()
    rows[0] = 0
    return rows


def gensim_init(kind: str, data: Data, corpus_zh: list[list[str]], dim: int, seed: int) -> torch.Tensor:
    """[V, d] skip-gram word2vec or fastText on the task's training text plus the corpus's Chinese side."""
    from gensim.models import FastText, Word2Vec

    cls = Word2Vec if kind == "word2vec" else FastText
    model = cls(
        data.train_tokens + corpus_zh, vector_size=dim, window=5, min_count=1, sg=1, epochs=5, seed=seed, workers=2
    )
    rows = torch.zeros((len(data.vocab), dim))
    for i, w in enumerate(data.vocab[2:], start=2):
        if kind == "fasttext" or w in model.wv:
            rows[i] = torch.from_numpy(model.wv[w].copy())
    rows[1] = rows[2:].mean(0)
    return rows


def xlembed_init(template: str, data: Data) -> torch.Tensor:
    """[V, d] an xlembed output built with --vocab = the task vocabulary."""
    import xlembed

    e = xlembed.load(template.format(task=data.name))
    if e.words != data.vocab:
        missing = len(set(data.vocab) - set(e.words))
        raise SystemExit(
            f"{e.path}: its vocabulary is not {data.name}'s ({missing} task words missing); "
            f"build it with --vocab from --write-vocab"
        )
    rows = e.vectors.float().clone()
    rows[0] = 0
    return rows


# --- models ---------------------------------------------------------------------------------------


def sinusoidal(length: int, dim: int) -> torch.Tensor:
    """[T, d] the Transformer paper's positional encoding."""
    position = torch.arange(length).unsqueeze(1)  # [T, 1]
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))  # [d/2]
    pe = torch.zeros(length, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
    return pe


class Classifier(nn.Module):
    def __init__(self, rows: torch.Tensor, labels: int, freeze: bool, transformer: bool, s: Settings):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(rows, freeze=freeze, padding_idx=0)
        d = rows.shape[1]
        self.scale = rows[1:].norm(dim=1).mean().item() or 1.0  # positions at the rows' own scale
        self.encoder = (
            nn.TransformerEncoderLayer(d, s.heads, s.ff, dropout=0.1, batch_first=True) if transformer else None
        )
        self.register_buffer("positions", sinusoidal(s.max_length, d) * self.scale / math.sqrt(d / 2), persistent=False)
        self.head = nn.Linear(d, labels)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # [B, T, d]
        if self.encoder is not None:
            x = self.encoder(x + self.positions[: x.shape[1]], src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).float()  # [B, T, 1]
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1))  # [B, labels]


def train_and_test(
    data: Data, rows: torch.Tensor, model: str, mode: str, n: int | None, seed: int, s: Settings
) -> float:
    torch.manual_seed(seed)
    subset = labelled_subset(list(range(len(data.train))), n, seed)  # indices into the training split
    net = Classifier(rows, len(data.labels), mode == "frozen", model == "transformer", s)
    if model == "bag" and mode == "frozen":  # the same model, its fixed input computed once: mean rows [N, d]
        features = [mean_rows(rows, ids) for ids in (data.train_ids, data.test_ids)]
        forward = lambda which, idx: net.head(features[which][idx])  # noqa: E731
    else:
        forward = lambda which, idx: net(*batch([(data.train_ids, data.test_ids)[which][i] for i in idx]))  # noqa: E731
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=s.lr)
    steps = max(s.min_steps, s.epochs * math.ceil(len(subset) / s.batch_size))
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        pick = [subset[i] for i in torch.randint(len(subset), (min(s.batch_size, len(subset)),), generator=g).tolist()]
        loss = nn.functional.cross_entropy(forward(0, pick), torch.tensor([data.train[i].label for i in pick]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [
                forward(1, list(range(start, min(start + 256, len(data.test_ids))))).argmax(1)
                for start in range(0, len(data.test_ids), 256)
            ]
        )
    return (predicted == data.test_labels).float().mean().item()


def mean_rows(rows: torch.Tensor, ids: list[list[int]]) -> torch.Tensor:
    """[N, d] each text's mean row ([PAD] excluded), as the bag model computes it."""
    flat = torch.tensor([i for x in ids for i in x])
    offsets = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
    return nn.functional.embedding_bag(flat, rows, offsets, mode="mean")


# --- the grid and its summary ---------------------------------------------------------------------


def summarise(cells: list[Cell]) -> list[dict]:
    """mean ± sd over seeds per (task, model, init, mode, n), and the labelled examples each
    initialisation needs to reach random's accuracy with all of them (same task, model, mode)."""
    groups: dict[tuple, list[float]] = {}
    for c in cells:
        groups.setdefault((c.task, c.model, c.init, c.mode, c.n), []).append(c.accuracy)
    rows = []
    for (task, model, init, mode, n), accs in groups.items():
        rows.append(
            dict(
                task=task,
                model=model,
                init=init,
                mode=mode,
                n=n,
                mean=round(statistics.mean(accs), 4),
                sd=round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                seeds=len(accs),
            )
        )
    for r in rows:
        target = next(
            (
                q["mean"]
                for q in rows
                if (q["task"], q["model"], q["mode"], q["init"], q["n"])
                == (r["task"], r["model"], r["mode"], "random", None)
            ),
            None,
        )
        reached = sorted(
            (q["n"] if q["n"] is not None else math.inf)
            for q in rows
            if (q["task"], q["model"], q["mode"], q["init"]) == (r["task"], r["model"], r["mode"], r["init"])
            and target is not None
            and q["mean"] >= target
        )
        r["reaches_random_all_at"] = (
            "not run" if target is None else None if not reached else "all" if reached[0] == math.inf else reached[0]
        )
    return rows


def markdown(summary: list[dict], sizes: list) -> str:
    head = (
        "| task | model | mode | init | "
        + " | ".join(f"{'all' if n is None else n}" for n in sizes)
        + " | reaches random@all at |"
    )
    lines = [head, "|" + "---|" * (len(sizes) + 5)]
    keys = sorted(
        {(r["task"], r["model"], r["mode"], r["init"]) for r in summary},
        key=lambda k: (k[0], k[1], k[2], (BASE_INITS + (k[3],)).index(k[3])),
    )
    for key in keys:
        cells = {r["n"]: r for r in summary if (r["task"], r["model"], r["mode"], r["init"]) == key}
        values = [f"{cells[n]['mean']:.3f} ± {cells[n]['sd']:.3f}" if n in cells else "—" for n in sizes]
        reach = next(iter(cells.values()))["reaches_random_all_at"]
        lines.append(f"| {' | '.join(key)} | " + " | ".join(values) + f" | {reach if reach is not None else '> all'} |")
    return "\n".join(lines)


def read_cells(path: Path) -> list[Cell]:
    """The cells of a --json file, or of a run's progress lines (stderr) when it was stopped early."""
    import re

    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [Cell(**c) for c in json.loads(text)["cells"]]
    line = re.compile(r"^(\S+) (\S+) (\S+) (\S+) n=(\S+) seed=(\d+): ([\d.]+) \((\d+) s\)$")
    return [
        Cell(m[1], m[2], m[3], m[4], None if m[5] == "all" else int(m[5]), int(m[6]), float(m[7]), float(m[8]))
        for m in map(line.match, text.splitlines())
        if m
    ]


def read_corpus(path: Path | None) -> list[list[str]]:
    if path is None:
        return []
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", action="append", choices=sorted(DEV_TASKS), help="a dev task (repeatable; default: both)")
    p.add_argument("--csv", type=Path, help="another task: a CSV file, with --text and --label columns")
    p.add_argument("--text", default="review")
    p.add_argument("--label", default="label")
    p.add_argument("--write-vocab", type=Path, help="write DIR/TASK.vocab.txt for each task and stop")
    p.add_argument(
        "--xlembed", action="append", default=[], help="NAME=OUT_DIR, '{task}' in OUT_DIR becomes the task's name"
    )
    p.add_argument(
        "--reference",
        type=Path,
        help="an xlembed output whose projected rows scale the random rows (default: the first --xlembed's)",
    )
    p.add_argument("--corpus-zh", type=Path, help="segmented Chinese side (one sentence a line) for word2vec/fastText")
    p.add_argument("--models", default="bag,transformer")
    p.add_argument("--inits", help="comma-separated (default: random,word2vec,fasttext and every --xlembed)")
    p.add_argument("--modes", default="frozen,fine-tuned")
    p.add_argument("--sizes", default="100,1000,all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--max-length", type=int, default=Settings().max_length)
    p.add_argument("--epochs", type=int, default=Settings().epochs)
    p.add_argument("--min-steps", type=int, default=Settings().min_steps)
    p.add_argument("--lr", type=float, default=Settings().lr)
    p.add_argument("--centre", action="store_true",
                   help="subtract each initialisation's mean row ([PAD] left at 0) before training, every init alike")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: on a busy machine more only spin)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", action="store_true", help="print the table to stdout")
    p.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="print one table from earlier --json files (or the progress lines of a stopped run) and stop",
    )
    return p.parse_args()


def load_tasks(args) -> list:
    tasks = [dev_task(name) for name in (args.task or ([] if args.csv else sorted(DEV_TASKS)))]
    if args.csv:
        tasks.append(read_task(args.csv, args.text, args.label))
    return tasks


def initial_rows(
    init: str, data: Data, xl: dict[str, str], reference: torch.Tensor, corpus: list[list[str]], seed: int, cache: dict,
    centre: bool = False,
) -> torch.Tensor:
    """Each initialisation once per (task, init), random rows once per seed (word2vec and fastText
    are trained once per task, with seed 0: the seeds vary the classifier's training); with
    `centre`, less their mean row."""
    key = (data.name, init, seed if init == "random" else 0)
    if key not in cache:
        if init == "random":
            rows = random_init(data.vocab, reference, seed)
        elif init in ("word2vec", "fasttext"):
            rows = gensim_init(init, data, corpus, reference.shape[1], 0)
        else:
            rows = xlembed_init(xl[init], data)
        cache[key] = centred(rows) if centre else rows
    return cache[key]


def centred(rows: torch.Tensor) -> torch.Tensor:
    """rows [V, d] less the mean of every row but [PAD] (row 0, left at zeros), as
    `Embeddings.to_torch(centre=True)` gives them."""
    from xlembed.embeddings import centred_

    out = centred_(rows.clone(), 0)
    out[0] = 0
    return out


def main() -> None:
    args = parse_args()
    if args.table:
        cells = [c for path in args.table for c in read_cells(path)]
        print(markdown(summarise(cells), sorted({c.n for c in cells}, key=lambda n: math.inf if n is None else n)))
        return
    torch.set_num_threads(args.threads)
    s = Settings(max_length=args.max_length, epochs=args.epochs, min_steps=args.min_steps, lr=args.lr)
    datasets = [prepare(t, s.max_length) for t in load_tasks(args)]
    if args.write_vocab:
        args.write_vocab.mkdir(parents=True, exist_ok=True)
        for d in datasets:
            (args.write_vocab / f"{d.name}.vocab.txt").write_text("".join(w + "\n" for w in d.vocab), encoding="utf-8")
            print(f"{args.write_vocab / (d.name + '.vocab.txt')}: {len(d.vocab):,} words", file=sys.stderr)
        return
    import xlembed

    xl = dict(x.split("=", 1) for x in args.xlembed)
    inits = args.inits.split(",") if args.inits else [*BASE_INITS, *xl]
    ref_dir = args.reference or (xl[next(iter(xl))].format(task=datasets[0].name) if xl else None)
    if ref_dir is None:
        raise SystemExit("give --reference (an xlembed output) to scale the random rows")
    ref = xlembed.load(ref_dir)
    reference = ref.vectors[ref.projected].float()  # [P, d]
    corpus = read_corpus(args.corpus_zh)
    sizes = [None if x == "all" else int(x) for x in args.sizes.split(",")]
    cells, cache = [], {}
    for data in datasets:
        for init in inits:
            for seed in [int(x) for x in args.seeds.split(",")]:
                try:
                    rows = initial_rows(init, data, xl, reference, corpus, seed, cache, args.centre)
                except (OSError, SystemExit, xlembed.XlembedError) as e:  # a missing build: the other cells still count
                    print(f"{data.name} {init}: skipped ({e})", file=sys.stderr, flush=True)
                    break
                for model in args.models.split(","):
                    for mode in args.modes.split(","):
                        for n in sizes:
                            start = time.perf_counter()
                            acc = train_and_test(data, rows, model, mode, n, seed, s)
                            cells.append(
                                Cell(
                                    data.name,
                                    model,
                                    init,
                                    mode,
                                    n,
                                    seed,
                                    round(acc, 4),
                                    round(time.perf_counter() - start, 1),
                                )
                            )
                            print(
                                f"{data.name} {model} {init} {mode} n={n or 'all'} seed={seed}: {acc:.4f} "
                                f"({cells[-1].seconds:.0f} s)",
                                file=sys.stderr,
                                flush=True,
                            )
    summary = summarise(cells)
    result = dict(
        settings=dict(s._asdict(), centre=args.centre),
        tasks={
            d.name: dict(train=len(d.train), test=len(d.test_ids), vocab=len(d.vocab), labels=len(d.labels))
            for d in datasets
        },
        inits={i: xl.get(i, i) for i in inits},
        cells=[c._asdict() for c in cells],
        summary=summary,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(markdown(summary, sizes) if args.markdown else json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
