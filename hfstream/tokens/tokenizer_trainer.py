"""Byte-level BPE tokenizer training fed straight from a document stream (no file dump).

    tokenizer = train_bpe(corpus.stream_batches(), vocab_size=8192)
    report = train_tokenizer_from_stream("builtin:python-docs", max_samples=2000,
                                         vocab_size=4096, output_dir="runs/tok")

The first ``holdout_samples`` documents of the stream are kept out of training and used to
measure bytes per token, the usual figure of a tokenizer's compression.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from hfstream.errors import ConfigError, EmptyDatasetError
from hfstream.progress import progress_bar
from hfstream.source.heldout import read_head, text_id
from hfstream.sources import open_source
from hfstream.rundir import atomic_write_text, prepared_output_dir

log = logging.getLogger("hfstream.tokens.tokenizer_trainer")

DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>",)


def train_bpe(texts: Iterable[str] | Iterable[list[str]], vocab_size: int, min_frequency: int = 2,
              special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
              length: int | None = None) -> Tokenizer:
    """Train a GPT-2 style byte-level BPE tokenizer on texts (or lists of texts) as they come.

    The result has no normalizer, the GPT-2 pre-tokenizer regex, all 256 byte symbols and the
    special tokens first (so ``<|endoftext|>`` is id 0): it runs on both backends of
    :class:`hfstream.tokenization.TextEncoder`, tiktoken included.

    Args:
        texts: the documents, one by one or in lists; consumed once, never stored.
        vocab_size: the vocabulary size to reach (special tokens and 256 bytes included).
        min_frequency: a pair must occur this often to be merged.
        special_tokens: added first, never split or merged.
        length: the number of items in ``texts``, if known (for the trainer's bookkeeping).

    Raises:
        ConfigError: vocab_size too small to hold the bytes and the special tokens.
    """
    check_bpe_args(vocab_size, min_frequency, special_tokens)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def check_bpe_args(vocab_size: int, min_frequency: int, special_tokens: Sequence[str]) -> None:
    """Raise ConfigError for settings that cannot produce a byte-level BPE."""
    floor = 256 + len(special_tokens)
    if vocab_size < floor:
        raise ConfigError(f"vocab_size={vocab_size} is too small: the 256 byte symbols and "
                          f"{len(special_tokens)} special token(s) need {floor}",
                          f"pass --vocab-size {floor} or more (a few thousand is the least useful)")
    if min_frequency < 1:
        raise ConfigError(f"min_frequency={min_frequency} must be at least 1", "2 is usual")
    if isinstance(special_tokens, str) or not all(isinstance(t, str) and t for t in special_tokens):
        raise ConfigError(f"special_tokens must be a list of non-empty strings, got {special_tokens!r}",
                          "pass e.g. --special-tokens '<|endoftext|>'")
    if len(set(special_tokens)) != len(special_tokens):
        raise ConfigError(f"special_tokens has duplicates: {list(special_tokens)}",
                          "list each special token once")


def bytes_per_token(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[int, int]:
    """(UTF-8 bytes, tokens) of ``texts`` under ``tokenizer`` (no special tokens added)."""
    num_bytes = sum(len(t.encode("utf-8")) for t in texts)
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return num_bytes, sum(len(e.ids) for e in encodings)


def tokenizer_from_json(text: str) -> Tokenizer:
    """A tokenizer from the JSON text of a ``tokenizer.json`` (e.g. broadcast between ranks)."""
    return Tokenizer.from_str(text)


@dataclass
class TokenizerReport:
    """What a tokenizer training run read and produced (saved as ``tokenizer_report.json``)."""

    dataset: str
    documents: int             # documents trained on
    bytes: int                 # their UTF-8 bytes
    seconds: float             # reading + training
    docs_per_s: float
    vocab_size: int
    min_frequency: int
    special_tokens: list[str]
    holdout_documents: int     # documents kept out of training, from the head of the stream
    holdout_bytes: int
    holdout_tokens: int
    bytes_per_token: float | None  # holdout_bytes / holdout_tokens

    def summary(self) -> str:
        bpt = f"{self.bytes_per_token:.3f}" if self.bytes_per_token else "n/a (no held-out documents)"
        return (f"trained a {self.vocab_size:,}-token byte-level BPE on {self.documents:,} documents "
                f"({self.bytes / 1e6:,.1f} MB) of {self.dataset} in {self.seconds:.1f}s "
                f"({self.docs_per_s:,.0f} docs/s); bytes per token on {self.holdout_documents:,} "
                f"held-out documents: {bpt}")


class _Feed:
    """Batches of texts for the BPE trainer, counting documents and bytes and driving a bar."""

    def __init__(self, batches: Iterable[list[str]], skip: Callable[[str], bool] | None,
                 limit: int | None, bar: Any):
        self.batches, self.skip, self.limit, self.bar = batches, skip, limit, bar
        self.documents = self.bytes = 0

    def __iter__(self) -> Iterator[list[str]]:
        for batch in self.batches:
            if self.skip is not None:
                batch = [t for t in batch if not self.skip(t)]
            if self.limit is not None:
                batch = batch[:self.limit - self.documents]
            size = sum(len(t.encode("utf-8")) for t in batch)
            self.documents += len(batch)
            self.bytes += size
            if self.bar is not None:
                self.bar.update(len(batch))
                self.bar.set_postfix_str(f"{self.bytes / 1e6:,.1f} MB", refresh=False)
            yield batch
            if self.limit is not None and self.documents >= self.limit:
                return


def train_from_corpus(corpus: Any, max_samples: int | None, vocab_size: int, *, min_frequency: int = 2,
                      special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
                      holdout: Sequence[str] = (), skip: Callable[[str], bool] | None = None,
                      progress: bool = True, dataset: str = "") -> tuple[Tokenizer, TokenizerReport]:
    """Train on the next ``max_samples`` documents of ``corpus`` (anything with ``stream_batches``;
    None: to the end of the stream).

    Args:
        holdout: documents kept out of training, on which bytes per token is measured.
        skip: documents for which this returns True are not trained on (nor counted).
        progress: show a progress bar (documents/s, MB, ETA) on stderr.

    Raises:
        EmptyDatasetError: the stream gave no document to train on.
    """
    start = time.perf_counter()
    with progress_bar(total=max_samples, unit="doc", unit_scale=True, disable=not progress,
                      desc="tokenizer", smoothing=0.1, dynamic_ncols=True) as bar:
        feed = _Feed(corpus.stream_batches(), skip, max_samples, bar)
        tokenizer = train_bpe(feed, vocab_size, min_frequency, special_tokens)
    seconds = time.perf_counter() - start
    if feed.documents == 0:
        raise EmptyDatasetError(f"no documents to train the tokenizer on from {dataset or 'the stream'}",
                                "check the dataset, split and text column (try: hfstream head "
                                "--dataset ...), or lower the held-out count")
    held_bytes, held_tokens = bytes_per_token(tokenizer, holdout) if holdout else (0, 0)
    report = TokenizerReport(
        dataset=dataset, documents=feed.documents, bytes=feed.bytes, seconds=round(seconds, 3),
        docs_per_s=round(feed.documents / max(seconds, 1e-9), 1),
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True), min_frequency=min_frequency,
        special_tokens=list(special_tokens), holdout_documents=len(holdout),
        holdout_bytes=held_bytes, holdout_tokens=held_tokens,
        bytes_per_token=round(held_bytes / held_tokens, 4) if held_tokens else None)
    if report.vocab_size < vocab_size:
        log.warning("the vocabulary stopped at %d of the %d asked for: the %d documents had no more "
                    "pairs occurring %d+ times (more documents or a lower --min-frequency would help)",
                    report.vocab_size, vocab_size, feed.documents, min_frequency)
    return tokenizer, report


def train_tokenizer_from_stream(dataset: Any, max_samples: int | None, vocab_size: int,
                                output_dir: str | Path, *, min_frequency: int = 2,
                                special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
                                holdout_samples: int | None = None, progress: bool = True,
                                **corpus_options: Any) -> TokenizerReport:
    """Hold out the stream's first documents, train on the next ``max_samples``, save the result.

    ``holdout_samples`` defaults to ``min(500, max_samples // 10)`` (500 without max_samples).
    Documents equal to a held-out one are skipped, not counted, so exactly ``max_samples``
    documents are trained on when the stream has them.

    ``dataset`` is anything :func:`hfstream.sources.open_source` takes (a dataset name, a
    mixture, a DocumentSource); ``corpus_options`` go to it (``split``, ``name``,
    ``data_files``, ``text_column``, ...). Arguments, source and output directory are checked
    before anything is read, and files are written atomically: a failed run leaves nothing
    behind.
    """
    check_bpe_args(vocab_size, min_frequency, special_tokens)
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples={max_samples} must be >= 1", "pass --max-samples N")
    if holdout_samples is None:
        holdout_samples = 500 if max_samples is None else min(500, max_samples // 10)
    if holdout_samples < 0:
        raise ConfigError(f"holdout_samples={holdout_samples} must be >= 0", "0 skips the measurement")
    # The source first: a bad path or option fails before the output directory is created.
    # The feed stops after max_samples trained documents; the stream itself has no limit.
    source = open_source(dataset, **corpus_options)
    label = source.name
    with source as corpus, prepared_output_dir(output_dir) as output:
        holdout = read_head(corpus, holdout_samples)
        held = {text_id(t) for t in holdout}
        tokenizer, report = train_from_corpus(
            corpus, max_samples, vocab_size, min_frequency=min_frequency,
            special_tokens=special_tokens, holdout=holdout, progress=progress, dataset=label,
            skip=(lambda t: text_id(t) in held) if held else None)
        save_tokenizer(tokenizer, output, report)
    return report


def save_tokenizer(tokenizer: Tokenizer, output_dir: str | Path,
                   report: TokenizerReport | None = None) -> Path:
    """Write ``tokenizer.json`` (and ``tokenizer_report.json``) atomically; return the json path."""
    output = Path(output_dir)
    path = output / "tokenizer.json"
    atomic_write_text(path, tokenizer.to_str(pretty=True))
    if report is not None:
        atomic_write_text(output / "tokenizer_report.json", json.dumps(asdict(report), indent=2) + "\n")
    return path
