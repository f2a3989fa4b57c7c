"""xlembed: Chinese word embeddings from an English–Chinese parallel corpus and an English BERT.

    import xlembed
    e = xlembed.load("runs/demo")             # Embeddings
    e.translate("猫", k=3)                     # nearest English words, (word, cosine) pairs
    config = xlembed.load_config(None)        # defaults; or a TOML file
    config.tokenize.tsv = "pairs.tsv"
    xlembed.run(config, "out.work", "out")    # the whole pipeline
"""
from .config import (  # noqa: E402
                     AlignConfig,
                     Config,
                     Device,
                     EncodeConfig,
                     Executor,
                     ExecutorConfig,
                     Oov,
                     Precision,
                     ProjectConfig,
                     Strategy,
                     Symmetrization,
                     TokenizeConfig,
                     WriteConfig,
                     load_config,
)
from .errors import XlembedError  # noqa: E402
from .run import run, run_one  # noqa: E402  (it imports the stages when it runs them)
from .version import __version__

__all__ = [
    "__version__", "load", "run", "run_one", "load_config", "Embeddings", "XlembedError",
    "Config", "TokenizeConfig", "EncodeConfig", "AlignConfig", "ProjectConfig", "WriteConfig", "ExecutorConfig",
    "Symmetrization", "Strategy", "Oov", "Device", "Precision", "Executor",
]

# imported on first use: they bring torch (seconds of import time), which `xlembed --help` does without
LAZY = {"Embeddings": "embeddings", "load": "embeddings"}


def __getattr__(name: str):
    if name in LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xlembed' has no attribute '{name}'")
