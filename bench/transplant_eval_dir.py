"""Retrieval P@1 of one transplanted model directory on held-out pairs (as
bench/transplant.py retrieval scores "transplant"): Chinese through the
directory's own tokenizer, mean pooling; English through MiniLM.

    python bench/transplant_eval_dir.py DIR HELDOUT.tsv
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transplant as tb  # noqa: E402
from retrieval_core import english_sentence_vectors, precision_at_1, read_heldout  # noqa: E402

from xlembed.models import default_model_dir  # noqa: E402

torch.set_num_threads(1)
pairs = read_heldout(Path(sys.argv[2]))
en = english_sentence_vectors(default_model_dir(), [p.en for p in pairs])
zh = tb.transplant_vectors(Path(sys.argv[1]), [p.zh for p in pairs])
print(
    sys.argv[1],
    json.dumps(precision_at_1(zh, en)._asdict()),
    time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    flush=True,
)
