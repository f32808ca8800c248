"""Documents to EIR sample texts: fixed-length word chunks or whole documents; ids by position.

Chunk mode (the EIR tutorial's shape) splits documents on whitespace, puts ``separator`` as one
word between consecutive documents, and cuts the word stream into samples of exactly
``sequence_length`` words (the last one of a finite stream may be shorter). Document mode
(``sequence_length=0``) makes one sample of each document, unchanged.

``sequence_length`` counts *words*; EIR's ``max_length`` counts *tokens* of EIR's own tokenizer
(a BPE tokenizer turns one English word into ~1.3 tokens), and EIR samples a ``max_length``
window out of anything longer (``sampling_strategy_if_longer``). Words a sample carries beyond
that window are sent but never trained on: ``sequence_length ~ max_length * 0.75`` uses all
the text, a larger value trades bandwidth for more varied windows.
"""

from __future__ import annotations

from typing import Iterable, Iterator

DEFAULT_SEPARATOR = "<|endoftext|>"
ID_PREFIX = "sample_"


def sample_id(position: int) -> str:
    """The id of the sample at ``position`` of the stream (0-based, counted from the start).

    Positions count every sample the stream produces, validation samples included, so an id
    names the same text after every rewind, and excluding ids never shifts the others.
    """
    return f"{ID_PREFIX}{position}"


def sample_texts(documents: Iterable[str], sequence_length: int,
                 separator: str = DEFAULT_SEPARATOR) -> Iterator[str]:
    """The sample texts made from a stream of documents.

    Args:
        documents: document texts, in stream order.
        sequence_length: words per sample; 0 makes one sample per document.
        separator: the word put between two documents in chunk mode ("" for none).

    Yields:
        Sample texts: words joined by single spaces (chunk mode) or whole documents.
    """
    if sequence_length < 0:
        raise ValueError(f"sequence_length must be >= 0, got {sequence_length}")
    if sequence_length == 0:
        yield from documents
        return
    yield from _word_chunks(documents, sequence_length, separator)


def _word_chunks(documents: Iterable[str], length: int, separator: str) -> Iterator[str]:
    words: list[str] = []
    start = 0  # words[start:] are not yet emitted; compacted lazily to keep slicing cheap
    for document in documents:
        new = document.split()
        if not new:
            continue
        if separator and len(words) > start:
            words.append(separator)
        words.extend(new)
        while len(words) - start >= length:
            yield " ".join(words[start:start + length])
            start += length
        if start > 4096:  # drop emitted words; amortised O(1) per word
            del words[:start]
            start = 0
    if len(words) > start:
        yield " ".join(words[start:])
