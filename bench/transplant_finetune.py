"""Fine-tuning a transplanted model on the dev tasks (issue 23), on the CPU or a GPU.

    python bench/transplant_finetune.py --model-dir DIR --random-dir DIR [--sizes 100 1000 all] [--seeds 0 1 2] \
        [--test-size 1000] [--select] [--device cuda] [--json FILE] [--cells DIR]

The model + mean pooling + a linear layer, all trained (AdamW, linear warm-up
then linear decay; batches of similar length), on n labelled examples of each
dev task (bench/tasks.py's split and subsets, as the downstream benchmark's),
per seed; accuracy on the task's test set, or on a fixed seeded sample of it
(--test-size, the same sample in every cell). --select measures instead on
held-out training examples (the end of the seed's shuffle, never among the n
trained on), for choosing the settings without looking at the test set.
Each finished run is written at once (--json: the grid so far; --cells: one
file per run), so a stopped grid keeps its finished cells. It needs torch,
transformers and bench/tasks.py only (not xlembed), so it runs where only
those are installed. `bench/transplant.py finetune` is the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import DEV_TASKS, DOWNSTREAM, labelled_subset, read_task, split_task


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


def batches(tokenizer, examples, batch_size: int, max_length: int, device: str = "cpu"):
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        encoded = tokenizer(
            [e.text for e in chunk], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        labels = torch.tensor([e.label for e in chunk])
        yield encoded["input_ids"].to(device), encoded["attention_mask"].to(device), labels.to(device)


def finetune_once(model_dir: Path, train, test, n_labels: int, seed: int, args) -> float:
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = Classifier(model_dir, n_labels).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    epochs = args.epochs_small if len(train) <= 100 else args.epochs
    steps = epochs * -(-len(train) // args.batch_size)
    schedule = get_linear_schedule_with_warmup(optimizer, round(args.warmup * steps), steps)
    model.train()
    for _ in range(epochs):
        order = bucketed([train[i] for i in torch.randperm(len(train), generator=generator).tolist()], args, generator)
        for ids, mask, labels in batches(tokenizer, order, args.batch_size, args.max_length, args.device):
            loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        by_length = sorted(test, key=lambda e: len(e.text))
        for ids, mask, labels in batches(tokenizer, by_length, 128, args.max_length, args.device):
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


def check_arguments(args) -> None:
    """Up front, not after the first runs: a variant without its model, a --select with nothing held out."""
    if "random rows" in args.variants and args.random_dir is None:
        raise SystemExit("error: the variant 'random rows' needs --random-dir (or give --variants transplant)")
    if args.select and args.test_size <= 0:
        raise SystemExit("error: --select scores on --test-size held-out training examples: give a size above 0")


def finetune(args) -> dict:
    """Seed by seed (every cell gets its first seed first), each run printed and saved as it ends."""
    check_arguments(args)
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


def add_arguments(f: argparse.ArgumentParser) -> None:
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
    f.add_argument("--device", default="cpu", help="where the model trains (cpu, cuda)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(finetune(args), args.json)


def report(result: dict, json_path: Path | None) -> None:
    """The command line and the date, then the result: printed, and written to --json where given."""
    result = dict(command=" ".join(sys.argv), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())) | result
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
