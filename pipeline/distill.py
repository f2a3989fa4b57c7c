"""Distillation for a transplant: its Chinese input rows trained so that
the model's embedding of each Chinese sentence of the build corpus matches
the English model's own embedding of the English sentence it was aligned
with. The teacher is the English model itself, pooled as it pools for
sentence-transformers; the student is the same model with the Chinese rows
(its layers frozen by default: only the input rows move, so the transplant
keeps the English model's layers as they are; with `layers_lr` they train too). Reimers and Gurevych (2020) make a
sentence encoder multilingual this way, training the whole student; here
the student starts from the transplant's aligned rows.

    done = distill_rows(student, chinese_tokenizer, teacher, english_tokenizer,
                        corpus_pairs(work), DistillOptions(epochs=1), pooling="mean")  # student's rows trained
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from safetensors import safe_open

from .errors import XlembedError
from .io import Reporter, SilentReporter, all_finite, read_lines, release_freed_memory
from .layout import WorkDir
from .models import sentence_pooling


class DistillOptions(NamedTuple):
    epochs: float  # passes over the corpus's sentence pairs (a fraction runs that share of the steps)
    lr: float = 2e-3  # AdamW's, with a linear warm-up over the first 5 % of steps, then linear decay to 0
    batch_size: int = 64  # sentence pairs per step
    max_length: int = 128  # tokens per sentence, both models
    seed: int = 0
    layers_lr: float = 0.0  # > 0: every other parameter (the Transformer layers) trains too, at this rate


class SentencePair(NamedTuple):
    en: str
    zh: str


class Distilled(NamedTuple):
    """What distill_rows did (the rows are trained in place, in the student)."""

    pairs: int  # distinct sentence pairs trained on
    steps: int
    loss_first: float  # mean cosine distance (1 - cos) of the first and the last 5 % of steps
    loss_last: float


def chinese_text(words: list[str]) -> str:
    """A tokenized Chinese line as text: the words joined without spaces,
    except between two that would otherwise run together (Latin letters or
    digits on both sides)."""
    text = ""
    for word in words:
        if text and text[-1].isascii() and text[-1].isalnum() and word[:1].isascii() and word[:1].isalnum():
            text += " "
        text += word
    return text


def corpus_pairs(work: WorkDir) -> list[SentencePair]:
    """The build corpus's distinct sentence pairs (tokenize's corpus.en and corpus.zh)."""
    pairs = zip(read_lines(work.corpus_en), read_lines(work.corpus_zh))
    distinct = dict.fromkeys(SentencePair(en, chinese_text(zh.split(" "))) for en, zh in pairs if en and zh)
    return list(distinct)


def pool(model, ids: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence embeddings [B, d] of a batch ids [B, T], mask [B, T]."""
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, d]
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def padded(id_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, T] padded with pad_id, and mask [B, T]."""
    width = max(len(ids) for ids in id_lists)
    ids = torch.full((len(id_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(id_lists), width), dtype=torch.long)
    for i, row in enumerate(id_lists):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


def token_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


@torch.no_grad()
def teacher_embeddings(teacher, tokenizer, texts: list[str], max_length: int, pooling: str, batch_size: int,
                       reporter: Reporter, description: str = "distil: English sentence embeddings") -> torch.Tensor:
    """The English model's sentence embeddings [n, d] float32 of `texts`, in
    their order; each batch (of similar length, for less padding) is
    tokenized when it runs, so no corpus-sized list of ids is ever held."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros((len(texts), teacher.config.hidden_size))
    with reporter.task(description, len(texts), "sentences") as task:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            out[chunk] = pool(teacher, batch["input_ids"], batch["attention_mask"], pooling).float()
            task.advance(len(chunk))
    return out


def batch_order(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's batches: a seeded shuffle, each run of 8 batches sorted by
    length (less padding), then the batches in a seeded random order."""
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    run = batch_size * 8
    batches = []
    for start in range(0, len(shuffled), run):
        ordered = sorted(shuffled[start : start + run], key=lambda i: lengths[i])
        batches += [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]


def schedule(steps: int):
    """Linear warm-up over the first 5 % of steps, then linear decay to 0."""
    warmup = max(1, round(0.05 * steps))
    return lambda step: min(1.0, (step + 1) / warmup) * max(0.0, 1.0 - step / steps)


def sentence_limit(max_length: int, *models) -> int:
    """Tokens per sentence: max_length, capped at every model's positions."""
    return min([max_length] + [model.config.max_position_embeddings for model in models])


def distill_rows(student, student_tokenizer, teacher, teacher_tokenizer, pairs: list[SentencePair],
                 options: DistillOptions, pooling: str = "mean", reporter: Reporter = SilentReporter()) -> Distilled:
    """Train `student`'s input rows (in place) towards the teacher's
    sentence embeddings of `pairs`; every other parameter frozen, unless
    options.layers_lr > 0."""
    if not pairs:
        raise XlembedError("distillation needs sentence pairs, and the build corpus has none")
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    limit = sentence_limit(options.max_length, student, teacher)
    zh_ids = token_ids(student_tokenizer, [p.zh for p in pairs], limit)
    targets = teacher_embeddings(teacher.eval(), teacher_tokenizer, [p.en for p in pairs], limit, pooling,
                                 options.batch_size * 2, reporter)  # [n, d]
    rows = student.get_input_embeddings().weight  # [V, d]
    layers = [parameter for parameter in student.parameters() if parameter is not rows]
    for parameter in student.parameters():
        parameter.requires_grad_(parameter is rows or options.layers_lr > 0)
    steps_per_epoch = -(-len(pairs) // options.batch_size)
    steps = max(1, round(options.epochs * steps_per_epoch))
    groups = [dict(params=[rows], lr=options.lr)]
    if options.layers_lr > 0:
        groups.append(dict(params=layers, lr=options.layers_lr))
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(steps))
    losses = train_steps(student, zh_ids, targets, steps, optimizer, scheduler, generator, options, pooling, reporter)
    student.eval()
    window = max(1, len(losses) // 20)
    return Distilled(len(pairs), steps, sum(losses[:window]) / window, sum(losses[-window:]) / window)


def cosine_distance(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss: the mean of 1 - cos(predicted, target) over a batch [b, d]
    (retrieval ranks by cosine; it did as well as MSE or better on unseen
    sentences, bench/RESULTS.md)."""
    return (1 - torch.nn.functional.cosine_similarity(predicted, targets, dim=1)).mean()


def train_steps(student, zh_ids, targets, steps, optimizer, scheduler, generator, options: DistillOptions,
                pooling: str, reporter: Reporter, loss_of: Callable = cosine_distance,
                ids_of: Callable[[list[int]], list[int]] | None = None) -> list[float]:
    """`steps` optimizer steps over the pairs, epoch after epoch; the loss
    of each. loss_of(predicted [b, d], targets [b, d]) -> a scalar; ids_of:
    each sentence's ids as trained this step (bench/distill_probe.py's
    character dropout), the ids as they are without it."""
    student.train()
    losses: list[float] = []
    pad_id = student.config.pad_token_id or 0
    lengths = [len(ids) for ids in zh_ids]
    trained = "Chinese rows and layers" if options.layers_lr > 0 else "Chinese rows"
    with reporter.task(f"distil: {trained}", steps, "steps") as task:
        while len(losses) < steps:
            for batch in batch_order(lengths, options.batch_size, generator)[: steps - len(losses)]:
                ids = [ids_of(zh_ids[i]) if ids_of else zh_ids[i] for i in batch]
                predicted = pool(student, *padded(ids, pad_id), pooling)  # [b, d]
                loss = loss_of(predicted, targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                task.advance()
    return losses


# The static matrix (`xlembed write --distill`): the same teacher, a bag of rows as the student.


class MatrixDistillOptions(NamedTuple):
    epochs: float  # passes over the corpus's sentence pairs
    anchor: float = 10.0  # weight of the mean squared change of each batch's rows (keeps words' neighbours)
    lr: float = 1e-2  # Adam's, constant
    batch_size: int = 64  # sentence pairs per step; the other pairs of a batch are each one's negatives
    tau: float = 0.05  # InfoNCE's temperature on cosines
    max_length: int = 256  # English word pieces per sentence, as bench/retrieval.py encodes the English side
    seed: int = 0


@dataclass(frozen=True)
class PackedIds:
    """Lists of row ids in one tensor (a corpus's worth of Python lists would
    cost ~30 times the memory): list i is flat[offsets[i]:offsets[i + 1]]."""

    flat: torch.Tensor  # [total] int64, every list's ids one after another
    offsets: torch.Tensor  # [n + 1] int64

    @staticmethod
    def of(id_lists: Iterable[list[int]]) -> "PackedIds":
        flat, offsets = array("q"), array("q", [0])
        for ids in id_lists:
            flat.extend(ids)
            offsets.append(len(flat))
        return PackedIds(torch.frombuffer(flat, dtype=torch.int64) if flat else torch.zeros(0, dtype=torch.int64),
                         torch.frombuffer(offsets, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids of lists `indices` one after another, and where each list
        starts in them: embedding_bag's input and offsets."""
        spans = [(self.offsets[i].item(), self.offsets[i + 1].item()) for i in indices]
        flat = torch.cat([self.flat[a:b] for a, b in spans])
        starts = torch.tensor([0] + [b - a for a, b in spans[:-1]]).cumsum(0)
        return flat, starts


class MatrixPairs(NamedTuple):
    """The build corpus's distinct sentence pairs whose Chinese side has a row."""

    row_ids: PackedIds  # the rows of each pair's Chinese words (words without a row left out)
    lines: torch.Tensor  # [n] int64, the first line of the corpus that holds each pair


def matrix_pairs(work: WorkDir, words: list[str]) -> MatrixPairs:
    index = {word: i for i, word in enumerate(words)}
    distinct: dict[tuple[str, str], int] = {}
    for line, (en, zh) in enumerate(zip(read_lines(work.corpus_en), read_lines(work.corpus_zh))):
        if en and zh:
            distinct.setdefault((en, zh), line)
    lines = array("q")

    def each_pairs_rows() -> Iterator[list[int]]:
        for (en, zh), line in distinct.items():
            ids = [index[word] for word in zh.split(" ") if word in index]
            if ids:
                lines.append(line)
                yield ids

    row_ids = PackedIds.of(each_pairs_rows())
    return MatrixPairs(row_ids, torch.tensor(lines, dtype=torch.int64))


def stored_targets(work: WorkDir, encode_key: str, lines: torch.Tensor) -> torch.Tensor | None:
    """[n, d] float16 (as kept; a batch at a time is made float32): the encode stage's sentence
    embeddings (WORK/sentences.safetensors) of corpus lines `lines`; None where that encode
    (`encode_key`) kept none."""
    if not work.sentence_vectors.exists():
        return None
    with safe_open(str(work.sentence_vectors), "pt") as f:
        if (f.metadata() or {}).get("encode_key") != encode_key:
            return None
        vectors, line_sentence = f.get_tensor("vectors"), f.get_tensor("line_sentence")  # [U, d], [n_lines]
    return vectors[line_sentence[lines]]


def bag_of_rows(rows: torch.Tensor, flat: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """[b, d] the mean row of each list (PackedIds.batch's flat ids and starts; none empty), rows [V, d]."""
    return torch.nn.functional.embedding_bag(flat, rows, starts, mode="mean")


def info_nce(predicted: torch.Tensor, targets: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE over a batch [b, d]: each sentence's cosine to its own target
    against the batch's other targets, divided by tau, in both directions."""
    logits = torch.nn.functional.normalize(predicted, dim=1) @ torch.nn.functional.normalize(targets, dim=1).T / tau
    gold = torch.arange(len(logits))  # [b]
    return (torch.nn.functional.cross_entropy(logits, gold) + torch.nn.functional.cross_entropy(logits.T, gold)) / 2


def distill_matrix(rows: torch.Tensor, row_ids: PackedIds, targets: torch.Tensor, options: MatrixDistillOptions,
                   reporter: Reporter = SilentReporter()) -> Distilled:
    """Train `rows` [V, d] (in place) so that the mean row of each sentence
    (its list in row_ids) is nearest its own target [n, d] among the batch's:
    InfoNCE plus anchor x the mean squared change of the batch's rows."""
    if not len(row_ids):
        raise XlembedError("distillation needs sentence pairs, and no Chinese sentence of the corpus has a row")
    generator = torch.Generator().manual_seed(options.seed)
    start = rows.clone()  # [V, d] the anchor
    trained = torch.nn.Parameter(rows)
    # sparse gradients and a lazy Adam: a step moves only the rows its batch uses (a rare word does not
    # drift on momentum between its sentences, where the anchor cannot hold it), and costs the batch, not V
    optimizer = torch.optim.SparseAdam([trained], lr=options.lr)
    steps = max(1, round(options.epochs * len(epoch_batches(len(row_ids), options.batch_size, generator))))
    losses: list[float] = []
    with reporter.task("distil: Chinese rows", steps, "steps") as task:
        while len(losses) < steps:
            for batch in epoch_batches(len(row_ids), options.batch_size, generator)[: steps - len(losses)]:
                flat, starts = row_ids.batch(batch)
                used = flat.unique()
                predicted = torch.nn.functional.embedding_bag(flat, trained, starts, mode="mean", sparse=True)
                moved = torch.nn.functional.embedding(used, trained, sparse=True) - start[used]  # [u, d]
                loss = info_nce(predicted, targets[batch].float(), options.tau) + options.anchor * (moved**2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                task.advance()
    if not all_finite(rows):  # (a block at a time: a mask of the whole would cost more than the rows)
        raise XlembedError("--distill: the training diverged (non-finite rows); lower --distill-anchor")
    window = max(1, len(losses) // 20)
    return Distilled(len(row_ids), steps, sum(losses[:window]) / window, sum(losses[-window:]) / window)


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of 0..n-1 in a seeded order, in batches; a last batch of
    one joins the one before (alone, it has no negatives)."""
    order = torch.randperm(n, generator=generator).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()  # (not `batches[-2] += batches.pop()`: that writes to the slot -2 names after the pop)
        batches[-1] += last
    return batches


def distill_vectors(vectors: torch.Tensor, words: list[str], work: WorkDir, teacher: Teacher,
                    options: MatrixDistillOptions, reporter: Reporter = SilentReporter()) -> dict:
    """Train rows [P, d] of `words` (in place) on the build corpus in `work`
    towards the English model's own sentence embeddings of its English side:
    those the encode stage kept, else the teacher's (a second pass of the
    model); what was done, for the manifest."""
    pairs = matrix_pairs(work, words)
    if not len(pairs.row_ids):
        raise XlembedError(f"{work.corpus_zh}: no Chinese sentence has a projected word; nothing to distil on")
    targets = stored_targets(work, teacher.encode_key, pairs.lines)  # [n, d]
    source: dict = dict(targets="encode")
    if targets is None:
        targets, source = teacher.embeddings(english_lines(work, pairs.lines), options.max_length, reporter)
    release_freed_memory()  # what finding the pairs and their targets freed, before the optimizer's state
    result = distill_matrix(vectors, pairs.row_ids, targets, options, reporter)
    chosen = {k: v for k, v in options._asdict().items() if k != "max_length"}  # the teacher's source says its own
    return dict(chosen, **source, pairs=result.pairs, steps=result.steps,
                loss="InfoNCE + anchor", loss_first=round(result.loss_first, 6), loss_last=round(result.loss_last, 6))


def english_lines(work: WorkDir, lines: torch.Tensor) -> list[str]:
    """Lines `lines` (increasing) of corpus.en: tokenize's English words, space-separated."""
    wanted = set(lines.tolist())
    return [en for line, en in enumerate(read_lines(work.corpus_en)) if line in wanted]


class Teacher(NamedTuple):
    """The English model a corpus was encoded with (`encode_key`: that encode stage's key)."""

    model_dir: Path | None  # None: not here (only the encode stage's kept embeddings can serve)
    encode_key: str

    def embeddings(self, english: list[str], max_length: int, reporter: Reporter) -> tuple[torch.Tensor, dict]:
        """[n, d] the model's sentence embeddings of `english`, computed now, and how."""
        from .models import load_encoder, load_tokenizer

        if self.model_dir is None:
            raise XlembedError("sentences.safetensors: not the sentence embeddings of this work directory's encode; "
                               "run `xlembed encode --force`")
        tokenizer, pooling = load_tokenizer(self.model_dir), sentence_pooling(self.model_dir)
        model = load_encoder(self.model_dir)
        # word pieces per sentence: ours, capped at the tokenizer's limit and the model's positions
        limit = sentence_limit(min(max_length, getattr(tokenizer, "model_max_length", None) or max_length), model)
        again = "distil: English sentence embeddings, none kept by encode (the model runs again)"
        targets = teacher_embeddings(model.eval(), tokenizer, english, limit, pooling, 128, reporter, again)  # [n, d]
        return targets, dict(targets="teacher", max_length=limit, pooling=pooling)
