"""Very long documents: cut only where the tokenizer's own pre-tokenizer cuts, so the ids still join up.

A document longer than :data:`PIECE_CHARS` is encoded as pieces of about that many characters
(spread over the tokenizer threads, each piece's working memory bounded), and the pieces' ids
are joined. They are the ids of the whole document, because a cut is made only where it
provably changes nothing:

* The tokenizer (:func:`can_cut`) has no normalizer, no non-special added token (nothing is
  split out of the text before pre-tokenization), a pre-tokenizer that splits with one of
  :data:`CUTTABLE_PATTERNS` (GPT-2's ``ByteLevel`` regex, or a ``Split`` with the GPT-2, Llama 3
  / cl100k, Qwen 2 or o200k regex) before ``ByteLevel``, and a model that encodes one pre-token
  at a time (BPE: no merge crosses a pre-token).
* A cut is made just before a space (U+0020) that follows an ASCII letter. In all those regexes
  letters are matched by runs that stop at any non-letter (contractions end with a letter), and
  no alternative puts a letter and a later space in one pre-token, so the space starts a
  pre-token of the whole text. The regexes have no lookbehind and no anchors, so the scan of the
  piece after the cut is the scan of the whole text from there. The pre-tokens before the cut
  were decided by reading at most up to the space, and the only reads of the space itself (a
  letter run ending, the ``(?!\\S)`` lookahead of an earlier whitespace run, which the letter
  keeps away) answer the same at the end of the piece. ``ByteLevel(add_prefix_space=True)``
  adds nothing to a piece that starts with a space.

A document with no such place (one 3 MB word, a long run of whitespace, text without ASCII
letters and spaces) is encoded whole, as are all documents of other tokenizers.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from hfstream.tokens.jobs import EncodeJob
from hfstream.tokens.tiktoken_bridge import (GPT2_PATTERN, NotConvertible, _check_added_tokens,
                                             _check_normalizer, _split_pattern)

PIECE_CHARS = 1 << 20  # a document longer than this is encoded in pieces of about this size

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
O200K_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
                 r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
#: Pre-tokenizer regexes for which the cut before " " after an ASCII letter is proven safe.
CUTTABLE_PATTERNS = frozenset({GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN, O200K_PATTERN})

_CUT = re.compile(r"[A-Za-z](?= )")  # the cut goes after the letter, before the space


def can_cut(config: dict[str, Any]) -> bool:
    """Whether documents of this tokenizer (its parsed ``tokenizer.json``) may be cut (see above)."""
    model = config.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout"):
        return False
    try:
        _check_normalizer(config.get("normalizer"))
        _check_added_tokens(config.get("added_tokens") or [])
        pattern, _ = _split_pattern(config.get("pre_tokenizer"))
    except NotConvertible:
        return False
    return pattern in CUTTABLE_PATTERNS


def cut_text(text: str, piece_chars: int) -> list[str]:
    """``text`` cut into pieces of at least ``piece_chars`` characters (the last may be shorter),
    each cut just before a space that follows an ASCII letter; one piece when there is none."""
    pieces, start = [], 0
    while len(text) - start > piece_chars:
        found = _CUT.search(text, start + piece_chars - 1)
        if found is None:
            break
        pieces.append(text[start:found.end()])
        start = found.end()
    pieces.append(text[start:])
    return pieces


def cut_long_texts(texts: Sequence[Any]) -> tuple[list[str], list[int]] | None:
    """The pieces of ``texts`` and how many each text became, or None when no text is long.

    Anything but a str is left to the encoder (whose error names it): then nothing is cut.
    """
    if not any(type(t) is str and len(t) > PIECE_CHARS for t in texts):
        return None
    if any(type(t) is not str for t in texts):
        return None
    pieces: list[str] = []
    counts: list[int] = []
    for text in texts:
        cut = cut_text(text, PIECE_CHARS) if len(text) > PIECE_CHARS else [text]
        pieces.extend(cut)
        counts.append(len(cut))
    return pieces, counts


class JoinedJob(EncodeJob):
    """The job of the texts, given the job of their pieces: ``result()`` joins the pieces back."""

    def __init__(self, pieces_job: EncodeJob, counts: list[int]):
        super().__init__([])  # no futures of its own: it waits on the pieces' job
        self._pieces_job, self._counts = pieces_job, counts

    def result(self) -> list[np.ndarray]:
        arrays, out, i = self._pieces_job.result(), [], 0
        for n in self._counts:
            out.append(arrays[i] if n == 1 else np.concatenate(arrays[i:i + n]))
            i += n
        return out

    def cancel(self) -> None:
        self._pieces_job.cancel()
