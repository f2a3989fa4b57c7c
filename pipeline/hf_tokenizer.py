"""A Hugging Face `tokenizers` tokenizer over a Chinese vocabulary, for the
outputs other libraries load without xlembed (the model2vec export, the
transplanted model): jieba cannot travel inside a tokenizer.json, so
Chinese is segmented by greedy longest match over the vocabulary instead
(a WordPiece model with an empty continuation prefix).

- normalizer: NFKC, as tokenize normalises Chinese;
- pre-tokenizer: whitespace and punctuation split runs; digits, Latin
  letters and CJK characters stay together so that multi-character words
  match; a character that is in no vocabulary word is isolated, so it
  alone becomes [UNK] (WordPiece turns a whole run into [UNK] when any
  part of it matches nothing);
- model: WordPiece, continuation prefix "", longest match first; or, given
  the words' corpus frequencies, a Unigram model: the segmentation with the
  highest product of word probabilities (Viterbi), which is how jieba cuts
  a sentence through its dictionary. On 1,000 held-out Tatoeba sentences
  (Tatoeba build's vocabulary) it agrees exactly with jieba on 76.3 % of
  sentences, longest match on 68.1 %.
"""
from __future__ import annotations

import math
import re

PAD, UNK = "[PAD]", "[UNK]"


def _character_class(chars: set[str]) -> str:
    """A regex class of `chars`, written as ranges where they run on."""
    codes = sorted(ord(c) for c in chars)
    parts, start = [], None
    for i, code in enumerate(codes):
        if start is None:
            start = code
        if i + 1 == len(codes) or codes[i + 1] != code + 1:
            lo, hi = re.escape(chr(start)), re.escape(chr(code))
            parts.append(lo if start == code else f"{lo}-{hi}")
            start = None
    return "".join(parts)


def vocabulary_tokenizer(words: list[str], unk_token: str = UNK, freqs: list[int] | None = None):
    """A `tokenizers.Tokenizer` whose ids are the positions in `words`
    (which must hold `unk_token`): longest match, or with `freqs` (each
    word's corpus frequency; 0 for words not in the corpus, counted as half
    an occurrence) the most probable segmentation. No post-processor:
    callers add the special tokens their model expects."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import Unigram, WordPiece

    vocab = {w: i for i, w in enumerate(words)}
    if unk_token not in vocab:
        raise ValueError(f"the vocabulary has no {unk_token}")
    known = {c for w in words if not (w.startswith("[") and w.endswith("]")) for c in w if not c.isspace()}
    if freqs is None:
        model = WordPiece(vocab, unk_token=unk_token, continuing_subword_prefix="", max_input_chars_per_word=1000)
    else:
        total = sum(freqs) or 1
        model = Unigram([(w, math.log(max(f, 0.5) / total)) for w, f in zip(words, freqs)], unk_id=vocab[unk_token],
                        byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFKC()
    split_unknown = (
        [pre_tokenizers.Split(Regex(f"[^{_character_class(known)}\\s]"), behavior="isolated")] if known else []
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), *split_unknown]
    )
    return tokenizer
