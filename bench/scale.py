"""Wall time and peak memory per stage at 1x and 10x the corpus.

    python bench/scale.py [--tsv data/tatoeba/cmn-eng.tsv] [--factors 1,10] [--json FILE]

The corpus is replicated FACTOR times, lines shuffled (fixed seed). Each
stage runs as its own `xlembed` process; its peak RSS is the process's
ru_maxrss from wait4 (children it waited for, such as eflomal, included).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tsv", type=Path, default=REPO / "data/tatoeba/cmn-eng.tsv")
    parser.add_argument("--factors", default="1,10")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    xlembed = str(Path(sys.executable).with_name("xlembed"))
    lines = [line for line in args.tsv.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    tmp = Path(tempfile.mkdtemp())
    result = dict(corpus=str(args.tsv), runs={})
    for factor in map(int, args.factors.split(",")):
        corpus = lines * factor
        random.Random(0).shuffle(corpus)
        tsv = tmp / f"x{factor}.tsv"
        tsv.write_text("\n".join(corpus) + "\n", encoding="utf-8")
        work, out = tmp / f"work{factor}", tmp / f"out{factor}"
        stages = {
            "tokenize": ["tokenize", "--tsv", str(tsv), "--work", str(work)],
            "encode": ["encode", "--work", str(work)],
            "align": ["align", "--work", str(work)],
            "project": ["project", "--work", str(work)],
            "write": ["write", "--work", str(work), "--out", str(out)],
        }
        run = {}
        for stage, stage_args in stages.items():
            seconds, rss = measured([xlembed, *stage_args, "-q"])
            run[stage] = dict(seconds=seconds, peak_rss_mib=rss)
        run["total_seconds"] = round(sum(r["seconds"] for r in run.values()), 2)
        run["peak_rss_mib"] = max(r["peak_rss_mib"] for r in run.values() if isinstance(r, dict))
        run["pairs"] = len(corpus)
        run["work_dir_mib"] = disk_mib(work)
        run["out_dir_mib"] = disk_mib(out)
        result["runs"][f"x{factor}"] = run
        shutil.rmtree(work)
    runs = list(result["runs"].values())
    if len(runs) == 2:
        result["growth"] = dict(
            seconds=round(runs[1]["total_seconds"] / runs[0]["total_seconds"], 2),
            peak_rss=round(runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"], 2),
            per_stage_seconds={s: round(runs[1][s]["seconds"] / runs[0][s]["seconds"], 2) for s in ("tokenize", "encode", "align", "project", "write")},
            per_stage_rss={s: round(runs[1][s]["peak_rss_mib"] / runs[0][s]["peak_rss_mib"], 2) for s in ("tokenize", "encode", "align", "project", "write")},
        )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
