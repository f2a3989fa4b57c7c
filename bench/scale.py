"""Wall time and peak memory per stage as the corpus grows.

    python bench/scale.py --tsv ../shared/data/parallel/mixed.tsv.gz --fractions 0.125,0.25,0.5,1 \\
        [--json FILE] [--keep DIR]
    python bench/scale.py [--tsv data/tatoeba/cmn-eng.tsv] --factors 1,10 [--json FILE]

--fractions takes a random sample of the corpus's pairs (fixed seed) of each
size; --factors replicates the corpus and shuffles it. Each stage runs as its
own `xlembed` process, one after the other; its peak RSS is the process's
ru_maxrss from wait4 (for align that includes eflomal, the child it waits
for: the larger of the two). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("tokenize", "encode", "align", "project", "write")


def measured(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return round(seconds, 2), round(usage.ru_maxrss / 1024, 1)  # ru_maxrss is in KiB on Linux


def disk_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def read_pairs(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tsv", type=Path, default=REPO / "data/tatoeba/cmn-eng.tsv")
    parser.add_argument("--factors", help="replicate the corpus this many times, e.g. 1,10")
    parser.add_argument("--fractions", help="random samples of the corpus, e.g. 0.125,0.25,0.5,1")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--keep", type=Path, help="keep the work directory of the last size here (e.g. for bench/devsuite.py)"
    )
    args = parser.parse_args()
    xlembed = str(Path(sys.executable).with_name("xlembed"))
    lines = read_pairs(args.tsv)
    tmp = Path(tempfile.mkdtemp())
    sizes = (
        [("x" + f, lambda f=f: lines * int(f)) for f in args.factors.split(",")]
        if args.factors
        else [
            (f, lambda f=f: random.Random(0).sample(lines, round(len(lines) * float(f))))
            for f in (args.fractions or "1").split(",")
        ]
    )
    result = dict(corpus=str(args.tsv), pairs_in_corpus=len(lines), cpus=os.cpu_count(), runs={})
    for name, make in sizes:
        corpus = make()
        if args.factors:
            random.Random(0).shuffle(corpus)
        tsv = tmp / f"{name}.tsv"
        tsv.write_text("\n".join(corpus) + "\n", encoding="utf-8")
        work, out = tmp / f"work-{name}", tmp / f"out-{name}"
        stage_args = {
            "tokenize": ["tokenize", "--tsv", str(tsv), "--work", str(work)],
            "encode": ["encode", "--work", str(work)],
            "align": ["align", "--work", str(work)],
            "project": ["project", "--work", str(work)],
            "write": ["write", "--work", str(work), "--out", str(out)],
        }
        run = {}
        for stage in STAGES:
            seconds, rss = measured([xlembed, *stage_args[stage], "-q"])
            record = json.loads((work / f"{stage}.json").read_text()) if stage != "write" else {}
            run[stage] = dict(seconds=seconds, peak_rss_mib=rss, seconds_in_stage=record.get("seconds"))
            print(name, stage, run[stage], file=sys.stderr, flush=True)
        encode = json.loads((work / "encode.json").read_text())
        run["total_seconds"] = round(sum(run[s]["seconds"] for s in STAGES), 2)
        run["peak_rss_mib"] = max(run[s]["peak_rss_mib"] for s in STAGES)
        run["pairs"] = len(corpus)
        run["en_words"] = encode["counts"]["words"]
        run["encode_words_per_second"] = round(encode["counts"]["words"] / encode["seconds"])
        run["encode_counts"] = encode["counts"]
        run["precision"] = encode["precision_used"]
        run["work_dir_mib"] = disk_mib(work)
        run["out_dir_mib"] = disk_mib(out)
        result["runs"][name] = run
        if args.keep and name == sizes[-1][0]:
            shutil.move(str(work), args.keep)
        else:
            shutil.rmtree(work)
    runs = list(result["runs"].values())
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        result["growth_first_to_last"] = dict(
            pairs=round(last["pairs"] / first["pairs"], 2),
            seconds=round(last["total_seconds"] / first["total_seconds"], 2),
            peak_rss=round(last["peak_rss_mib"] / first["peak_rss_mib"], 2),
            per_stage_seconds={s: round(last[s]["seconds"] / first[s]["seconds"], 2) for s in STAGES},
            per_stage_rss={s: round(last[s]["peak_rss_mib"] / first[s]["peak_rss_mib"], 2) for s in STAGES},
        )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
