"""Tokenization on the fly: texts -> uint32 token arrays for any HF ``tokenizer.json``.

Two backends give the same ids. ``tokenizers`` runs any tokenizer; ``tiktoken`` runs
byte-level BPE tokenizers (GPT-2, RoBERTa, Llama 3 style) several times faster, from a
``tiktoken.Encoding`` built out of the tokenizer's own vocabulary and merges
(:mod:`hfstream.tiktoken_bridge`). ``backend="auto"`` takes tiktoken only when the tokenizer
converts *and* both backends agree on :data:`SELF_CHECK_TEXTS` plus the caller's
``check_texts``.

Any document gets the ids ``tokenizers`` gives the whole of it: a text on which tiktoken's regex
engine gives up (a whitespace run of ~1M characters) is encoded by tokenizers instead, and a text
over a MiB is encoded in pieces cut only where the pre-tokenizer itself cuts
(:mod:`hfstream.tokens.long_texts`).

Special tokens in text: documents are ordinary text. A literal ``"<|endoftext|>"`` inside a
document is encoded as the characters it is made of, never as the special token, so that
only the packer decides where documents end. Both backends do this: tiktoken through its
ordinary encoding, tokenizers through ``Tokenizer.encode_special_tokens = True`` on a private
copy. (Non-special added tokens, which HF always splits out of text, keep a tokenizer on the
``tokenizers`` backend.)

    encoder = TextEncoder("/tmp/fineweb32k/tokenizer.json")
    arrays = encoder.encode_batch(["first document", "second document"])
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from tokenizers import Tokenizer

from hfstream.tokens.jobs import EncodeJob, groups, tokenizer_pool
from hfstream.errors import ConfigError, DataFormatError
from hfstream.tokens.long_texts import JoinedJob, can_cut, cut_long_texts
from hfstream.tokens.tiktoken_bridge import NotConvertible, TiktokenBPE, build_tiktoken_bpe

logger = logging.getLogger("hfstream.tokens.encoder")

Backend = Literal["auto", "tokenizers", "tiktoken"]
BACKENDS: tuple[str, ...] = ("auto", "tokenizers", "tiktoken")

# Tried in order when no eos_token is given: GPT-2/Qwen, Llama 3, Llama 2/T5, Gemma, BERT.
EOS_CANDIDATES: tuple[str, ...] = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>",
                                   "[SEP]")

# Texts on which the tiktoken twin must match tokenizers before "auto" uses it: the places
# where regex engines, Unicode tables and BPE merge rules tend to disagree.
SELF_CHECK_TEXTS: tuple[str, ...] = (
    "",
    " ",
    "Hello, world! This is a plain English sentence.",
    "café naïve résumé Ångström façade, and decomposed: cafe\u0301 nai\u0308ve",
    "emoji 👍 👍🏽 👩🏿‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵 ❤️ ☺︎ 🫠",
    "漢字かな交じり文。中文句子，标点！한국어 문장입니다. ｆｕｌｌｗｉｄｔｈ ＡＢＣ１２３",
    "مرحبا بالعالم، هذا نص عربي. שלום עולם",
    "नमस्ते दुनिया, यह देवनागरी है। தமிழ் ไทย",
    "Ελληνικά Кириллица ẞ ß ǅ ﬁ ℌ µ Ω ⅷ ²³ ½",
    "spaces:          end\n\n\n\nnewlines   \n  \n\t\t\ttabs\t \t\n",
    "odd spaces:\u00a0nbsp \u2009thin\u3000ideographic\u1680ogham \u00a0 \u202f\u205f\u2007|",
    "trailing spaces   ",
    "   leading spaces",
    "windows\r\nline\r\nendings\r\n\r\n\r\n",
    "digits 3.14159 1234567890 1,000,000 2024-01-01 0x1F 1e-9 ١٢٣ ४५६",
    "don't won't I'm you're we've they'll she'd it's DON'T I'M 'S 'T 'Ll ''quoted'' ’curly’",
    "def f(x):\n    return {'a': x ** 2}  # comment\n\tif (a && b) { c[i]++; } // done\n",
    "<|endoftext|> a literal special token <|endoftext|><|endoftext|> and </s> [SEP] <eos>",
    "zero\u200bwidth\u200d joiner \ufeffbom \u0085nel \u2028line \u2029para \x00nul \x1bescape",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!!!!!!!!!!!!!!!!!!!",
    "--------------------------------------------------------------------------------\n" * 3,
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝 ｶﾀｶﾅ 𐍈 𓀀 \U0001e030 \U00031350 ꟲ",
)


def _replace_surrogates(text: str) -> str:
    """Lone surrogates replaced by U+FFFD (as tiktoken does; tokenizers rejects them)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. under ``taskset``), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Tokenizer threads for one process: its usable CPUs, shared fairly between the ranks
    torchrun starts on this machine (``LOCAL_WORLD_SIZE``)."""
    try:
        ranks = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    except ValueError:
        ranks = 1
    return max(usable_cpus() // ranks, 1)


def load_tokenizer(spec: str | os.PathLike[str] | Tokenizer) -> Tokenizer:
    """Load a Hugging Face ``tokenizers.Tokenizer``.

    Args:
        spec: a path to a ``tokenizer.json``, a directory holding one, or a ``Tokenizer``
            (returned as is). Hub names are not downloaded.

    Raises:
        ConfigError: the path does not exist, the directory has no ``tokenizer.json``, or
            the file is not a valid tokenizer (the message quotes the parser).
    """
    if isinstance(spec, Tokenizer):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"tokenizer must be a path or a tokenizers.Tokenizer, got "
                          f"{type(spec).__name__}", "pass the path of a tokenizer.json file")
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(
            f"tokenizer path {str(spec)!r} does not exist",
            "pass a tokenizer.json file or a directory holding one; hub names are not "
            "downloaded, so save the tokenizer locally first, e.g. "
            "AutoTokenizer.from_pretrained(name).save_pretrained(directory)")
    if path.is_dir():
        path = _tokenizer_json_in(path)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception carrying the serde message
        raise ConfigError(
            f"{str(path)!r} is not a valid tokenizer.json: {exc}",
            "the file must be a Hugging Face tokenizers JSON (written by Tokenizer.save or "
            "save_pretrained); check that it is complete and not a vocab.json or a "
            "SentencePiece model") from exc


def _tokenizer_json_in(directory: Path) -> Path:
    path = directory / "tokenizer.json"
    if path.is_file():
        return path
    present = sorted(p.name for p in directory.iterdir())
    if "tokenizer.model" in present or "vocab.json" in present:
        hint = ("this directory holds slow-tokenizer files; let transformers convert them: "
                "AutoTokenizer.from_pretrained(directory).save_pretrained(directory) writes "
                "tokenizer.json")
    else:
        hint = "point to the directory a tokenizer was saved to, or to the tokenizer.json itself"
    listing = ", ".join(present[:8]) + (", ..." if len(present) > 8 else "") or "nothing"
    raise ConfigError(f"directory {str(directory)!r} has no tokenizer.json (it holds: {listing})",
                      hint)


class TextEncoder:
    """Encode batches of texts into one uint32 token array per text.

    No special tokens are added (no BOS, no EOS: the packer appends ``eos_id``), and special
    tokens written literally in a text are encoded as plain text (see the module docstring).

    Args:
        tokenizer: anything :func:`load_tokenizer` takes.
        backend: ``"tokenizers"``, ``"tiktoken"`` (byte-level BPE only; a ConfigError when the
            tokenizer does not convert or the self-check fails) or ``"auto"`` (tiktoken when
            it converts and passes the self-check, else tokenizers, logging why).
        eos_token: the token that separates documents; by default the first of
            :data:`EOS_CANDIDATES` in the vocabulary.
        num_threads: tokenizer threads for the tiktoken backend (default: the CPUs this process
            may run on, divided by ``LOCAL_WORLD_SIZE`` under torchrun: :func:`default_threads`),
            a pool shared by the encoders of this process (:mod:`hfstream.encode_jobs`). The
            tokenizers backend runs on one of them and uses its own Rayon pool inside
            (``RAYON_NUM_THREADS``).
        check_texts: extra texts (e.g. the first real documents) for the self-check.

    Attributes:
        backend: the backend actually used, ``"tokenizers"`` or ``"tiktoken"``.
        eos_id: id of the end-of-document token, or None when the vocabulary has none.
        vocab_size: number of ids, added tokens included.
        fingerprint: 16 hex digits of SHA-256 over the tokenizer JSON (padding and truncation
            settings excluded); ties checkpoints and loader states to a tokenizer.
        tokenizer: the private ``tokenizers.Tokenizer`` copy this encoder runs.
    """

    def __init__(self, tokenizer: str | os.PathLike[str] | Tokenizer, backend: Backend = "auto",
                 eos_token: str | None = None, num_threads: int | None = None,
                 check_texts: Sequence[str] | None = None):
        if backend not in BACKENDS:
            raise ConfigError(f"backend={backend!r} is not one of {BACKENDS}",
                              "use 'auto' unless you need to pin a backend")
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"num_threads={num_threads} must be at least 1",
                              "leave it unset to use every CPU")
        source = load_tokenizer(tokenizer)
        # A caller's Tokenizer is copied, so that it keeps its settings and ours can't drift.
        self.tokenizer = Tokenizer.from_str(source.to_str()) if source is tokenizer else source
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        config_json = self.tokenizer.to_str()
        self.fingerprint = hashlib.sha256(config_json.encode("utf-8")).hexdigest()[:16]
        self.tokenizer.encode_special_tokens = True  # not serialized: set again in __setstate__
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_id = self._find_eos_id(eos_token)
        self.num_threads = num_threads or default_threads()
        self._bpe: TiktokenBPE | None = None
        # "auto" decides on first use (building the tiktoken twin costs ~0.2 s: a run that reads
        # every document from the token cache never pays it); a pinned backend is checked now.
        self._cut_long = can_cut(json.loads(config_json))  # long documents in pieces, same ids (long_texts)
        self._choice: tuple[str, str, tuple[str, ...]] | None = (backend, config_json, tuple(check_texts or ()))
        self._backend = "tokenizers"
        self._lock = threading.Lock()
        if backend != "auto":
            self._decide()

    def prepare(self) -> None:
        """Choose the backend in a background thread now (returns at once), e.g. while a worker starts."""
        if self._choice is not None:
            threading.Thread(target=self._decide, daemon=True, name="hfstream-tokenizer-prepare").start()

    @property
    def backend(self) -> str:
        """The backend in use, ``"tokenizers"`` or ``"tiktoken"`` (chosen on first use with ``auto``)."""
        return self._decide()

    def _decide(self) -> str:
        if self._choice is not None:
            with self._lock:
                if self._choice is not None:
                    requested, config_json, check_texts = self._choice
                    self._backend = self._choose_backend(requested, json.loads(config_json), check_texts)
                    self._choice = None
                    logger.info("tokenizer %s: backend=%s vocab_size=%d eos_id=%s", self.fingerprint,
                                self._backend, self.vocab_size, self.eos_id)
        return self._backend

    def __repr__(self) -> str:
        return (f"TextEncoder(backend={self.backend!r}, vocab_size={self.vocab_size}, "
                f"eos_id={self.eos_id}, fingerprint={self.fingerprint!r})")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.tokenizer.encode_special_tokens = True  # a pickled Tokenizer forgets this flag

    # ---- public API -------------------------------------------------------------------------

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode texts; returns one uint32 array of token ids per text, nothing added."""
        return self._start(texts, inline=True).result()

    def submit(self, texts: Sequence[str]) -> EncodeJob:
        """Start encoding texts on the tokenizer threads and return at once.

        ``job.result()`` waits and returns what ``encode_batch(texts)`` would. Jobs run in the
        order they are submitted, so a caller can queue the next batch before it uses this one.
        """
        return self._start(texts, inline=False)

    def _start(self, texts: Sequence[str], inline: bool) -> EncodeJob:
        if isinstance(texts, str):
            raise ConfigError("encode_batch takes a list of texts, got a single str",
                              "use encode(text) for one text, or wrap it in a list")
        texts = list(texts)
        self._decide()
        cut = cut_long_texts(texts) if self._cut_long else None
        if cut is None:
            return self._start_encoding(texts, inline)
        pieces, counts = cut
        return JoinedJob(self._start_encoding(pieces, inline), counts)

    def _start_encoding(self, texts: list[str], inline: bool) -> EncodeJob:
        if self._bpe is None:
            encode, spans = self._encode_tokenizers, [(0, len(texts))] if texts else []
        else:
            encode, spans = self._encode_tiktoken, groups(texts)
        recover = functools.partial(self._recover, texts, encode)
        if inline and len(spans) <= 1:  # little work: a thread handoff would cost more than it saves
            return EncodeJob.inline(encode, texts, recover)
        return EncodeJob.submit(tokenizer_pool(self.num_threads), encode, texts, spans, recover)

    @staticmethod
    def _recover(texts: list[str], encode: Callable[[list[str]], list[np.ndarray]],
                 exc: BaseException) -> list[np.ndarray]:
        if not isinstance(exc, TypeError):
            raise exc
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataFormatError(f"texts[{bad}] is a {type(texts[bad]).__name__}, not a str",
                                  "pass decoded document text (str) only") from exc
        # tokenizers rejects lone surrogates (e.g. from a JSON "\ud800"); tiktoken replaces
        # them with U+FFFD. Do the same here so both backends agree.
        return encode([_replace_surrogates(t) for t in texts])

    def encode(self, text: str) -> np.ndarray:
        """Encode one text into a uint32 array of token ids."""
        return self.encode_batch([text])[0]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Turn token ids back into text (special tokens such as EOS are kept)."""
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    # ---- backends ---------------------------------------------------------------------------

    def _encode_tokenizers(self, texts: list[str]) -> list[np.ndarray]:
        # encode_batch_fast (tokenizers >= 0.21) skips the offsets we never read: ~20% faster.
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode(texts, add_special_tokens=False)
        return [np.array(e.ids, dtype=np.uint32) for e in encodings]

    def _encode_tiktoken(self, texts: Sequence[str]) -> list[np.ndarray]:
        assert self._bpe is not None
        try:
            return list(map(self._bpe.encode, texts))  # the BPE runs without the GIL
        except ValueError:  # the regex engine gave up on a text: see _encode_one_tiktoken
            return [self._encode_one_tiktoken(text) for text in texts]

    def _encode_one_tiktoken(self, text: str) -> np.ndarray:
        assert self._bpe is not None
        try:
            return self._bpe.encode(text)
        except ValueError as exc:
            # tiktoken runs the pre-tokenizer regex on fancy-regex, whose backtracking stack
            # overflows on a whitespace run of ~1M characters (`\s+(?!\S)` keeps a backtrack
            # point per character). tokenizers (Oniguruma) has no such limit, and its ids are
            # the ids by definition: this text is encoded by it, whole.
            logger.debug("tiktoken gave up on a %d-character text (%s): encoding it with "
                         "tokenizers", len(text), exc)
            return self._encode_tokenizers([_replace_surrogates(text)])[0]

    # ---- construction helpers ---------------------------------------------------------------

    def _find_eos_id(self, eos_token: str | None) -> int | None:
        if eos_token is not None:
            eos_id = self.tokenizer.token_to_id(eos_token)
            if eos_id is None:
                present = [t for t in EOS_CANDIDATES if self.tokenizer.token_to_id(t) is not None]
                raise ConfigError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary",
                                  f"use a token the tokenizer has (candidates present: "
                                  f"{present or 'none'}), or leave eos_token unset")
            return eos_id
        for token in EOS_CANDIDATES:
            eos_id = self.tokenizer.token_to_id(token)
            if eos_id is not None:
                return eos_id
        return None

    def _choose_backend(self, requested: str, config: dict[str, Any],
                        check_texts: Sequence[str]) -> str:
        if requested == "tokenizers":
            return "tokenizers"
        try:
            bpe = build_tiktoken_bpe(config)
        except NotConvertible as exc:
            if requested == "tiktoken":
                raise ConfigError(f"backend='tiktoken' cannot run this tokenizer: {exc}",
                                  "tiktoken handles byte-level BPE only; use backend='auto' "
                                  "or 'tokenizers'") from None
            logger.info("using the tokenizers backend: tokenizer is not tiktoken-convertible "
                        "(%s)", exc)
            return "tokenizers"
        self._bpe = bpe
        mismatch = self._compare_backends([*SELF_CHECK_TEXTS, *check_texts])
        if mismatch is None:
            return "tiktoken"
        self._bpe = None
        if requested == "tiktoken":
            raise ConfigError(f"backend='tiktoken' gives different ids than tokenizers: {mismatch}",
                              "use backend='auto' (falls back to tokenizers) or 'tokenizers'")
        logger.warning("using the tokenizers backend: the tiktoken twin disagrees (%s)", mismatch)
        return "tokenizers"

    def _compare_backends(self, texts: list[str]) -> str | None:
        """Describe the first text on which the two backends differ, or return None."""
        expected = self._encode_tokenizers(texts)
        got = self._encode_tiktoken(texts)
        for index, (want, have) in enumerate(zip(expected, got)):
            if np.array_equal(want, have):
                continue
            n = min(len(want), len(have))
            k = int(np.argmax(want[:n] != have[:n])) if np.any(want[:n] != have[:n]) else n
            near = self.decode(want[max(k - 3, 0):k + 3])
            return (f"text #{index} ({texts[index][:40]!r}...) differs at token {k} near "
                    f"{near!r}: tokenizers {want[k:k + 3].tolist()} vs tiktoken "
                    f"{have[k:k + 3].tolist()}")
        return None
