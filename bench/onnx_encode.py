"""ONNX Runtime against torch for the encoder's forward pass on the CPU
(issue 21: keep an ONNX backend only if it is >= 1.3x faster at vectors
with cosine >= 0.9999, as an option, not a default dependency).

    python -m pip install onnxruntime onnx onnxscript     # bench only
    python bench/onnx_encode.py CORPUS_EN [--sentences 5000] [--rounds 3] [--threads 2] [--bf16]

CORPUS_EN is a tokenize output (e.g. WORK/corpus.en of Tatoeba). MiniLM
(the installed default model, resolved as xlembed does) is exported with
torch.onnx to a temporary directory: input ids and attention mask in, the
hidden states the encoder pools from out (the mean of the layers of
`encode.layer`, default mean-last4), batch and length axes dynamic. The
first N unique sentences are planned and batched by the encode stage's own
code (length-sorted, the default batch limits); then, alternating for
`--rounds` rounds, every batch goes through torch (fp32, inference mode)
and through onnxruntime (fp32), each on `--threads` threads, and only the
forward passes are timed. Words' vectors are pooled from each backend's
hidden states by the stage's pooling and compared by cosine. Prints one
JSON object (seconds per round, medians, the speed ratio torch / onnx,
the cosine min and mean over words).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from xlembed.config import Config, Precision
from xlembed.encode import Encoder, batch_bounds, load_model, make_batch, pool
from xlembed.models import resolve_model_dir


class HiddenStates(torch.nn.Module):
    """The model's hidden states as the encoder pools them: the mean of `layers`, float32."""

    def __init__(self, model, layers: list[int]):
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return torch.stack([out.hidden_states[i].float() for i in self.layers]).mean(0)


def export(module: HiddenStates, batch, path: Path) -> None:
    args = (batch.input_ids, batch.attention)
    names = dict(input_names=["input_ids", "attention_mask"], output_names=["hidden"])
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
            "hidden": {0: "batch", 1: "length"}}
    with torch.inference_mode(False), torch.no_grad():
        try:  # the TorchScript exporter: dynamic axes by name
            torch.onnx.export(module, args, str(path), dynamic_axes=axes, opset_version=17, dynamo=False, **names)
        except Exception as e:  # noqa: BLE001 - fall back to the dynamo exporter
            print(f"TorchScript export failed ({str(e).splitlines()[0]}); dynamo exporter")
            batch_dim, length = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
            shapes = {"input_ids": {0: batch_dim, 1: length}, "attention_mask": {0: batch_dim, 1: length}}
            torch.onnx.export(module, args, str(path), dynamic_shapes=shapes, dynamo=True, **names)


def batches_of(corpus_en: Path, n_sentences: int, encoder: Encoder) -> tuple[list, int]:
    """The stage's own batches over the first `n_sentences` unique sentences, and their rows."""
    seen: dict[str, None] = {}
    with corpus_en.open(encoding="utf-8") as f:
        for line in f:
            seen.setdefault(line.rstrip("\n"), None)
            if len(seen) == n_sentences:
                break
    plan = encoder.plan(list(seen))
    opts, n_special = encoder.opts, len(encoder.prefix) + len(encoder.suffix)
    bounds = batch_bounds(plan.rows.items, opts.batch_size, opts.batch_tokens, n_special)
    batches = [
        make_batch(plan.rows.items[a:b], plan.pieces, plan.rows, encoder.prefix, encoder.suffix, encoder.pad_id)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return batches, plan.rows.n_rows


def timed_pass(run_one, batches: list, n_rows: int, dim: int) -> tuple[float, float, torch.Tensor]:
    """Seconds and process CPU seconds in the forward passes (pooling not
    counted), and the pooled vectors [n_rows, d] float32."""
    vectors, filled, seconds, cpu = torch.empty((n_rows, dim)), 0, 0.0, 0.0
    for batch in batches:
        start, cpu_start = time.perf_counter(), time.process_time()
        hidden = run_one(batch)
        seconds, cpu = seconds + time.perf_counter() - start, cpu + time.process_time() - cpu_start
        pool(hidden, batch, vectors[filled : filled + batch.n_rows])
        filled += batch.n_rows
    return seconds, cpu, vectors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus_en", type=Path)
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="time torch in bfloat16 too (a reference)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    config = Config().set(device="cpu", precision="fp32").validate(("encode",))
    model_dir = resolve_model_dir(None)
    encoder = Encoder(model_dir, config.encode, torch.device("cpu"), Precision.fp32)
    batches, n_rows = batches_of(args.corpus_en, args.sentences, encoder)
    module = HiddenStates(encoder.model, encoder.layers).eval()
    tmp = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    export(module, batches[len(batches) // 2], tmp / "encoder.onnx")
    export_seconds = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = ort.InferenceSession(str(tmp / "encoder.onnx"), options, providers=["CPUExecutionProvider"])

    def with_onnx(batch) -> torch.Tensor:
        feed = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention.numpy()}
        return torch.from_numpy(session.run(["hidden"], feed)[0])

    backends = {"torch_fp32": lambda batch: module(batch.input_ids, batch.attention), "onnx_fp32": with_onnx}
    if args.bf16:
        module_bf16 = HiddenStates(load_model(model_dir, torch.device("cpu"), Precision.bf16), encoder.layers).eval()
        backends["torch_bf16"] = lambda batch: module_bf16(batch.input_ids, batch.attention)
    seconds: dict[str, list[float]] = {name: [] for name in backends}
    cpu: dict[str, list[float]] = {name: [] for name in backends}
    vectors = {}
    with torch.inference_mode():
        for r in range(args.rounds):
            names = list(backends) if r % 2 == 0 else list(reversed(backends))  # alternate who goes first
            for name in names:
                t, c, vectors[name] = timed_pass(backends[name], batches, n_rows, encoder.dim)
                seconds[name].append(round(t, 3))
                cpu[name].append(round(c, 3))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    cosines = {
        name: torch.nn.functional.cosine_similarity(vectors[name], vectors["torch_fp32"])
        for name in backends if name != "torch_fp32"
    }
    result = dict(
        corpus=str(args.corpus_en),
        sentences=args.sentences,
        batches=len(batches),
        words_with_vector=n_rows,
        pieces=int(sum(int(b.attention.sum()) for b in batches)),
        threads=args.threads,
        onnxruntime=ort.__version__,
        torch=torch.__version__,
        export_seconds=round(export_seconds, 1),
        seconds=seconds,
        median_seconds={k: round(v, 3) for k, v in medians.items()},
        cpu_seconds=cpu,
        speedup_vs_torch_fp32={k: round(medians["torch_fp32"] / v, 3) for k, v in medians.items()},
        cosine_min={k: round(float(c.min()), 6) for k, c in cosines.items()},
        cosine_mean={k: round(float(c.mean()), 6) for k, c in cosines.items()},
        max_abs_diff={k: float((vectors[k] - vectors["torch_fp32"]).abs().max()) for k in cosines},
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
