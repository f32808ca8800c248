"""Turn a byte-level BPE ``tokenizer.json`` into a ``tiktoken.Encoding`` that yields the same ids.

Only the shape GPT-2 / RoBERTa / Llama 3 style tokenizers share is converted: model BPE over
the 256 byte-level symbols, no normalizer, and a pre-tokenizer that is either ``ByteLevel``
with its built-in GPT-2 regex or ``Sequence[Split(Regex, Isolated), ByteLevel(use_regex=False)]``.
Anything else raises :class:`NotConvertible` with the reason; the caller falls back to
``tokenizers``. A structural match is necessary, not sufficient (tiktoken merges any adjacent
pair whose concatenation is a token, HF only listed merges), so the caller also compares ids.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import tiktoken

# A special token no text can turn into (encode_to_numpy is never allowed any special token).
# Without one, tiktoken's special-token regex is empty and matches at every position: an
# encoding with no special tokens runs its special-aware encode 35% slower than encode_ordinary.
SENTINEL = "\U0010fffe<|hfstream-sentinel: never emitted|>\U0010fffe"

# The regex HF's ByteLevel pre-tokenizer applies when use_regex=True (tokenizers byte_level.rs).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class NotConvertible(Exception):
    """The tokenizer cannot be run through tiktoken; the message says why."""


@dataclass(frozen=True)
class TiktokenBPE:
    """A tiktoken encoding plus what it takes to turn its output into HF ids.

    Attributes:
        encoding: tiktoken encoding whose ranks follow the HF merge priority.
        rank_to_id: maps tiktoken ranks to HF ids, or None when the ranks already are HF ids.
        add_prefix_space: prepend " " to texts that do not start with one (HF ByteLevel option).
    """

    encoding: tiktoken.Encoding
    rank_to_id: np.ndarray | None
    add_prefix_space: bool

    # An encoding whose first use is by several threads at once stays ~30% slower in them
    # (measured with tiktoken 0.14); one encode in the thread that builds or unpickles it avoids that.
    def __post_init__(self) -> None:
        self.encode("warm up")

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)  # frozen
        self.encode("warm up")

    def encode(self, text: str) -> np.ndarray:
        """The HF ids of one text as a uint32 array; special tokens in it are plain text.

        ``encode_to_numpy`` (no special token allowed) gives ``encode_ordinary``'s ranks
        without building a Python list: ~20% faster, and the GIL is held only briefly.
        """
        if self.add_prefix_space and text and not text.startswith(" "):
            text = " " + text
        try:
            ranks = self.encoding.encode_to_numpy(text, allowed_special=_NONE, disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: replaced as tiktoken's encode_ordinary does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            ranks = self.encoding.encode_to_numpy(text, allowed_special=_NONE, disallowed_special=())
        # tiktoken's buffer is read-only; a copy (~1 us) keeps arrays writable, as tokenizers' are.
        return ranks.copy() if self.rank_to_id is None else self.rank_to_id[ranks]


_NONE: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    return {ch: b for b, ch in byte_to_unicode().items()}


def build_tiktoken_bpe(cfg: dict[str, Any]) -> TiktokenBPE:
    """Build the tiktoken twin of a tokenizer, given its parsed ``tokenizer.json``.

    Raises:
        NotConvertible: the tokenizer is not byte-level BPE of a shape tiktoken can reproduce.
    """
    model = cfg.get("model") or {}
    _check_model(model)
    _check_normalizer(cfg.get("normalizer"))
    pattern, add_prefix_space = _split_pattern(cfg.get("pre_tokenizer"))
    decoder = cfg.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        raise NotConvertible(f"decoder is {decoder.get('type')!r}, not ByteLevel")
    _check_added_tokens(cfg.get("added_tokens") or [])
    ranks, rank_to_id = _mergeable_ranks(model["vocab"], model["merges"])
    try:
        encoding = tiktoken.Encoding("hfstream-bytelevel-bpe", pat_str=pattern, mergeable_ranks=ranks,
                                     special_tokens={SENTINEL: max(ranks.values()) + 1})
    except ValueError as exc:  # fancy-regex could not compile the (Oniguruma) pattern
        raise NotConvertible(f"tiktoken rejected the pre-tokenizer regex {pattern!r}: "
                             f"{exc}") from exc
    return TiktokenBPE(encoding, rank_to_id, add_prefix_space)


def _check_normalizer(normalizer: dict[str, Any] | None) -> None:
    """Only no normalizer at all, or an empty Sequence, leaves the text untouched."""
    if normalizer is None:
        return
    if normalizer.get("type") == "Sequence":
        for inner in normalizer.get("normalizers", []):
            _check_normalizer(inner)
        return
    raise NotConvertible(f"normalizer {normalizer.get('type')!r} changes the text before BPE")


def _split_pattern(pre_tokenizer: dict[str, Any] | None) -> tuple[str, bool]:
    """Return (regex, add_prefix_space) for the two supported pre-tokenizer shapes."""
    if pre_tokenizer is None:
        raise NotConvertible("no pre-tokenizer (each text is one BPE word)")
    kind = pre_tokenizer.get("type")
    steps = pre_tokenizer.get("pretokenizers", []) if kind == "Sequence" else [pre_tokenizer]
    if len(steps) == 1 and steps[0].get("type") == "ByteLevel":
        byte_level = steps[0]
        if not byte_level.get("use_regex", True):
            raise NotConvertible("ByteLevel pre-tokenizer without a regex (each text is one "
                                 "BPE word)")
        # Applied to the whole text: with special tokens encoded as text, nothing splits it earlier.
        return GPT2_PATTERN, bool(byte_level.get("add_prefix_space", False))
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        split, byte_level = steps
        regex = (split.get("pattern") or {}).get("Regex")
        if regex is None:
            raise NotConvertible(f"Split pattern {split.get('pattern')!r} is not a regex")
        if split.get("behavior") != "Isolated" or split.get("invert"):
            raise NotConvertible(f"Split behavior {split.get('behavior')!r} (invert="
                                 f"{split.get('invert')}) is not Isolated")
        if byte_level.get("use_regex", True) or byte_level.get("add_prefix_space", False):
            raise NotConvertible("ByteLevel after Split must have use_regex=False and "
                                 "add_prefix_space=False")
        return regex, False
    shape = [step.get("type") for step in steps]
    raise NotConvertible(f"pre-tokenizer {shape!r} is not ByteLevel or [Split, ByteLevel]")


def _check_model(model: dict[str, Any]) -> None:
    if model.get("type") != "BPE":
        raise NotConvertible(f"model is {model.get('type')!r}, not BPE")
    if model.get("dropout"):
        raise NotConvertible(f"BPE dropout={model['dropout']} makes encoding random")
    for option in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(option):
            raise NotConvertible(f"BPE {option}={model[option]!r} is not byte-level BPE")
    if model.get("byte_fallback"):
        raise NotConvertible("BPE byte_fallback=True is SentencePiece-style, not byte-level")


def _check_added_tokens(added_tokens: list[dict[str, Any]]) -> None:
    # Special added tokens are encoded as plain text by both backends (see TextEncoder), but
    # HF always splits non-special ones out of the text; tiktoken's ordinary encoding cannot.
    plain = [t["content"] for t in added_tokens if not t.get("special")]
    if plain:
        raise NotConvertible(f"{len(plain)} non-special added token(s) (e.g. {plain[0]!r}) are "
                             "split out of the text by tokenizers")


def _mergeable_ranks(vocab: dict[str, int],
                     merges: list[Any]) -> tuple[dict[bytes, int], np.ndarray | None]:
    """tiktoken ranks: the 256 single bytes, then one rank per merge in merge-priority order.

    Returns the ranks and a lookup array rank -> HF id, or None when the HF ids can serve as
    ranks directly (merge results already carry increasing ids, as BpeTrainer assigns them).
    Vocabulary entries that no merge produces (special tokens, strays) are left out: the HF
    BPE model never emits them from text either.
    """
    to_byte = _unicode_to_byte()
    missing = [ch for ch in byte_to_unicode().values() if ch not in vocab]
    if missing:
        raise NotConvertible(f"vocabulary lacks {len(missing)} of the 256 byte-level symbols "
                             f"(e.g. {missing[0]!r})")
    ranks: dict[bytes, int] = {}
    hf_ids: list[int] = []
    for b, ch in byte_to_unicode().items():
        ranks[bytes([b])] = len(hf_ids)
        hf_ids.append(vocab[ch])
    for merge in merges:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token = left + right
        try:
            key = bytes(to_byte[ch] for ch in token)
        except KeyError:
            raise NotConvertible(f"merge result {token!r} is not byte-level") from None
        if key in ranks:
            continue  # a later merge giving the same token: tiktoken keeps the first priority
        ranks[key] = len(hf_ids)
        hf_ids.append(vocab[token])
    merged_ids = np.asarray(hf_ids[256:], dtype=np.int64)
    if np.all(np.diff(merged_ids) > 0):
        # Only merge results are ever compared by rank, so single bytes may keep any HF id.
        return {key: hf_ids[rank] for key, rank in ranks.items()}, None
    return ranks, np.asarray(hf_ids, dtype=np.uint32)
