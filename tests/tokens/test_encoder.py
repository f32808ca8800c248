"""Tests for hfstream.tokenization: both backends agree, auto picks right, errors say why."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from pydoc_data.topics import topics
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from conftest import FINEWEB
from hfstream.errors import ConfigError, DataFormatError
from hfstream.tokens.encoder import SELF_CHECK_TEXTS, TextEncoder, load_tokenizer

# English prose shipped with every CPython: ~80 documentation strings, ~460 kB.
TOPIC_TEXTS = [topics[name] for name in sorted(topics)]
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_byte_level_bpe(vocab_size: int = 2000, special_tokens=("<|endoftext|>",),
                         pre_tokenizer=None) -> Tokenizer:
    """A ByteLevelBPETokenizer equivalent trained on the pydoc topics and the tricky samples."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(TOPIC_TEXTS + list(SELF_CHECK_TEXTS), trainer=trainer)
    return tokenizer


def edit_json(tokenizer: Tokenizer, edit) -> Tokenizer:
    config = json.loads(tokenizer.to_str())
    edit(config)
    return Tokenizer.from_str(json.dumps(config))


def assert_same_ids(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype == np.uint32
        assert x.flags.writeable and y.flags.writeable  # both backends hand out arrays the caller owns
        assert np.array_equal(x, y), f"text #{i} differs"


@pytest.fixture(scope="module")
def byte_bpe() -> Tokenizer:
    return train_byte_level_bpe()


@pytest.fixture(scope="module")
def encoders(byte_bpe) -> tuple[TextEncoder, TextEncoder]:
    """(tokenizers backend, tiktoken backend) over the same byte-level BPE."""
    return TextEncoder(byte_bpe, backend="tokenizers"), TextEncoder(byte_bpe, backend="tiktoken")


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=1000, special_tokens=["[UNK]", "[SEP]"],
                                        show_progress=False)
    tokenizer.train_from_iterator(TOPIC_TEXTS, trainer=trainer)
    return tokenizer


# ---- backends agree ----------------------------------------------------------------------------

def test_tiktoken_matches_tokenizers_on_topics_and_samples(encoders):
    slow, fast = encoders
    texts = TOPIC_TEXTS + list(SELF_CHECK_TEXTS)
    assert_same_ids(slow.encode_batch(texts), fast.encode_batch(texts))
    assert sum(map(len, fast.encode_batch(TOPIC_TEXTS))) > 50_000  # real work, not empty arrays


def test_single_thread_and_single_text_paths_agree(byte_bpe, encoders):
    slow, _ = encoders
    one_thread = TextEncoder(byte_bpe, backend="tiktoken", num_threads=1)
    assert_same_ids(one_thread.encode_batch(TOPIC_TEXTS[:10]), slow.encode_batch(TOPIC_TEXTS[:10]))
    assert np.array_equal(one_thread.encode(TOPIC_TEXTS[0]), slow.encode(TOPIC_TEXTS[0]))
    assert one_thread.encode_batch([]) == []


def test_ids_not_in_merge_order_go_through_lookup(byte_bpe):
    # Reverse the ids of all merged tokens: merges (hence segmentation) stay the same, but
    # tiktoken ranks no longer equal HF ids, so the rank -> id lookup array must be used.
    def reverse_merged_ids(config):
        vocab = config["model"]["vocab"]
        merged = sorted((i, t) for t, i in vocab.items() if i > 256)
        for (i, token), (j, _) in zip(merged, reversed(merged)):
            vocab[token] = j

    permuted = edit_json(byte_bpe, reverse_merged_ids)
    fast = TextEncoder(permuted, backend="tiktoken")
    assert fast._bpe is not None and fast._bpe.rank_to_id is not None
    slow = TextEncoder(permuted, backend="tokenizers")
    assert_same_ids(slow.encode_batch(TOPIC_TEXTS), fast.encode_batch(TOPIC_TEXTS))
    original = TextEncoder(byte_bpe).encode(TOPIC_TEXTS[0])
    assert not np.array_equal(fast.encode(TOPIC_TEXTS[0]), original)


@pytest.mark.parametrize("shape", ["split_then_byte_level", "add_prefix_space"])
def test_other_byte_level_shapes_convert(shape):
    if shape == "split_then_byte_level":  # Llama 3 style
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        pre = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer = train_byte_level_bpe(vocab_size=800, pre_tokenizer=pre)
    fast = TextEncoder(tokenizer)
    assert fast.backend == "tiktoken"
    slow = TextEncoder(tokenizer, backend="tokenizers")
    texts = TOPIC_TEXTS[:20] + list(SELF_CHECK_TEXTS)
    assert_same_ids(slow.encode_batch(texts), fast.encode_batch(texts))


@pytest.mark.skipif(not FINEWEB.exists(), reason=f"{FINEWEB} not present")
def test_backends_agree_on_fineweb(encoders):
    pq = pytest.importorskip("pyarrow.parquet")
    texts = pq.read_table(FINEWEB, columns=["text"]).column("text").to_pylist()[:300]
    slow, fast = encoders
    assert_same_ids(slow.encode_batch(texts), fast.encode_batch(texts))


def test_submitted_jobs_give_encode_batch_ids_in_order(encoders):
    slow, fast = encoders
    # Several jobs queued before any result is read: each gets its own texts' ids, in order.
    batches = [TOPIC_TEXTS[i::3] for i in range(3)]
    jobs = [fast.submit(batch) for batch in batches]
    for batch, job in zip(batches, jobs):
        assert_same_ids(job.result(), slow.encode_batch(batch))
    assert slow.submit([]).result() == []
    with pytest.raises(DataFormatError, match=r"texts\[1\] is a NoneType"):
        fast.submit(["fine", None]).result()


def test_tokenizer_threads_work_in_a_forked_child(encoders):
    # A torch DataLoader worker is a fork: the parent's tokenizer threads do not exist there.
    slow, fast = encoders
    fast.encode_batch(TOPIC_TEXTS[:40])  # the parent's pool is up and running
    expected = sum(len(a) for a in slow.encode_batch(TOPIC_TEXTS[:40]))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: encode through the pool, report the token count, leave at once
        try:
            os.write(write, str(sum(len(a) for a in fast.encode_batch(TOPIC_TEXTS[:40]))).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("encoding hung in the forked child (it used the parent's dead pool)")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert int(os.read(read, 100)) == expected


def test_lone_surrogates_are_replaced_alike(encoders):
    texts = ["ok", "lone \ud800 high, pair \ud83d\ude00"]  # as json.loads can produce
    slow, fast = encoders
    assert_same_ids(slow.encode_batch(texts), fast.encode_batch(texts))
    assert fast.decode(fast.encode(texts[1])) == "lone \ufffd high, pair \U0001f600"


# ---- special tokens are ordinary text ------------------------------------------------------------

def test_default_threads_share_the_usable_cpus_between_local_ranks(byte_bpe, monkeypatch):
    from hfstream.tokens.encoder import default_threads

    usable = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert TextEncoder(byte_bpe).num_threads == default_threads() == usable
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(usable * 2))   # more ranks than CPUs: still one thread
    assert TextEncoder(byte_bpe).num_threads == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "oops")
    assert default_threads() == usable


def test_tiktoken_sentinel_in_text_is_plain_text(encoders):
    from hfstream.tokens.tiktoken_bridge import SENTINEL

    slow, fast = encoders
    texts = [SENTINEL, f"before {SENTINEL} after", SENTINEL * 3]
    assert_same_ids(slow.encode_batch(texts), fast.encode_batch(texts))


def test_literal_special_token_is_encoded_as_text(encoders):
    text = "end of one<|endoftext|>start of another"
    for encoder in encoders:
        ids = encoder.encode(text)
        assert encoder.eos_id not in ids.tolist()
        assert encoder.decode(ids) == text


def test_pickle_keeps_special_tokens_as_text(encoders):
    text = "a <|endoftext|> b"
    for encoder in encoders:
        clone = pickle.loads(pickle.dumps(encoder))
        assert clone.backend == encoder.backend and clone.fingerprint == encoder.fingerprint
        assert np.array_equal(clone.encode(text), encoder.encode(text))


def test_callers_tokenizer_is_left_alone(byte_bpe):
    byte_bpe.enable_truncation(max_length=4)
    try:
        encoder = TextEncoder(byte_bpe, backend="tokenizers")
        assert len(encoder.encode(TOPIC_TEXTS[0])) > 4
        assert byte_bpe.truncation is not None and not byte_bpe.encode_special_tokens
    finally:
        byte_bpe.no_truncation()


# ---- auto picks the right backend ------------------------------------------------------------

def test_auto_picks_tiktoken_for_byte_level_bpe(byte_bpe):
    assert TextEncoder(byte_bpe).backend == "tiktoken"


@pytest.mark.parametrize("kind", ["wordpiece", "whitespace_bpe", "nfc_normalizer",
                                  "non_special_added_token"])
def test_auto_falls_back_and_forcing_tiktoken_fails(kind, wordpiece, byte_bpe, caplog):
    if kind == "wordpiece":
        tokenizer, why = wordpiece, "WordPiece"
    elif kind == "whitespace_bpe":
        tokenizer = train_byte_level_bpe(500, pre_tokenizer=pre_tokenizers.Whitespace())
        why = "Whitespace"
    elif kind == "nfc_normalizer":
        tokenizer = edit_json(byte_bpe, lambda c: c.update(normalizer={"type": "NFC"}))
        why = "NFC"
    else:
        tokenizer = Tokenizer.from_str(byte_bpe.to_str())
        tokenizer.add_tokens(["<custom>"])
        why = "non-special added token"
    with caplog.at_level(logging.INFO, logger="hfstream.tokens.encoder"):
        auto = TextEncoder(tokenizer)
        assert auto.backend == "tokenizers"  # "auto" decides (and logs why) on first use
    assert any(why in record.getMessage() for record in caplog.records)
    with pytest.raises(ConfigError, match=why):
        TextEncoder(tokenizer, backend="tiktoken")
    decoded = auto.decode(auto.encode("Hello world"))
    assert "world" in decoded.lower()


def handmade_bpe(merges: list[tuple[str, str]]) -> Tokenizer:
    """Byte-level BPE from an explicit merge list (merge results get ids in merge order)."""
    byte_level = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_level))}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def test_self_check_rejects_a_disagreeing_twin(caplog):
    # HF merges "l o" first and has no ("l", "lo") merge, so "llo" stays [l, lo]; tiktoken
    # merges any pair whose bytes form a token and reaches "llo". "Hello" is in the samples.
    tokenizer = handmade_bpe([("l", "o"), ("l", "l"), ("ll", "o")])
    with caplog.at_level(logging.WARNING, logger="hfstream.tokens.encoder"):
        assert TextEncoder(tokenizer).backend == "tokenizers"
    assert any("disagrees" in record.getMessage() for record in caplog.records)
    with pytest.raises(ConfigError, match="different ids"):
        TextEncoder(tokenizer, backend="tiktoken")


def test_check_texts_take_part_in_the_self_check():
    # "qzx" appears in no built-in sample, so only check_texts can reveal the disagreement.
    tokenizer = handmade_bpe([("z", "x"), ("q", "z"), ("qz", "x")])
    assert TextEncoder(tokenizer).backend == "tiktoken"
    assert TextEncoder(tokenizer, check_texts=["a qzx b"]).backend == "tokenizers"


# ---- round trip, EOS, metadata ------------------------------------------------------------

def test_decode_encode_round_trip(encoders):
    _, fast = encoders
    for text in TOPIC_TEXTS + list(SELF_CHECK_TEXTS):
        assert fast.decode(fast.encode(text)) == text


def test_eos_id_detection(byte_bpe, wordpiece):
    assert TextEncoder(byte_bpe).eos_id == byte_bpe.token_to_id("<|endoftext|>") == 0
    assert TextEncoder(wordpiece).eos_id == wordpiece.token_to_id("[SEP]")
    llama_like = train_byte_level_bpe(400, special_tokens=("<s>", "</s>"))
    assert TextEncoder(llama_like).eos_id == llama_like.token_to_id("</s>")
    assert TextEncoder(llama_like, eos_token="<s>").eos_id == llama_like.token_to_id("<s>")
    assert TextEncoder(train_byte_level_bpe(400, special_tokens=())).eos_id is None
    with pytest.raises(ConfigError, match="<nope>"):
        TextEncoder(byte_bpe, eos_token="<nope>")


def test_vocab_size_and_dtype(encoders):
    for encoder in encoders:
        assert encoder.vocab_size == 2000
        ids = encoder.encode("hello")
        assert ids.dtype == np.uint32 and ids.max() < encoder.vocab_size


def test_fingerprint_is_stable_and_distinguishes(byte_bpe, tmp_path):
    path = tmp_path / "tokenizer.json"
    byte_bpe.save(str(path))
    prints = {TextEncoder(path).fingerprint, TextEncoder(str(path)).fingerprint,
              TextEncoder(tmp_path).fingerprint, TextEncoder(byte_bpe).fingerprint,
              TextEncoder(byte_bpe, backend="tokenizers").fingerprint}
    assert len(prints) == 1 and len(prints.pop()) == 16
    padded = Tokenizer.from_file(str(path))
    padded.enable_padding()
    assert TextEncoder(padded).fingerprint == TextEncoder(path).fingerprint
    assert TextEncoder(train_byte_level_bpe(1500)).fingerprint != TextEncoder(path).fingerprint


def test_bad_arguments(byte_bpe, encoders):
    with pytest.raises(ConfigError, match="backend='fast'"):
        TextEncoder(byte_bpe, backend="fast")
    with pytest.raises(ConfigError, match="num_threads=0"):
        TextEncoder(byte_bpe, num_threads=0)
    for encoder in encoders:
        with pytest.raises(ConfigError, match="single str"):
            encoder.encode_batch("not a list")
        with pytest.raises(DataFormatError, match=r"texts\[1\] is a NoneType"):
            encoder.encode_batch(["fine", None])


# ---- load_tokenizer ---------------------------------------------------------------------------

def test_load_tokenizer_accepts_file_directory_and_object(byte_bpe, tmp_path):
    byte_bpe.save(str(tmp_path / "tokenizer.json"))
    assert load_tokenizer(byte_bpe) is byte_bpe
    for spec in (tmp_path, str(tmp_path), tmp_path / "tokenizer.json"):
        assert load_tokenizer(spec).get_vocab() == byte_bpe.get_vocab()


def test_load_tokenizer_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_tokenizer(tmp_path / "nope.json")
    assert "nope.json" in str(info.value) and info.value.hint
    with pytest.raises(ConfigError, match="'gpt2' does not exist"):
        load_tokenizer("gpt2")  # a hub name: never downloaded


def test_load_tokenizer_directory_without_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x00")
    with pytest.raises(ConfigError, match="has no tokenizer.json") as info:
        load_tokenizer(tmp_path)
    assert "tokenizer.model" in str(info.value) and "save_pretrained" in info.value.hint


@pytest.mark.parametrize("content", ['{"version": "1.0", "model": {"type": "BPE", "vocab": {',
                                     '{"hello": "world"}', "not json at all"])
def test_load_tokenizer_corrupt_file(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="is not a valid tokenizer.json") as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)
    assert len(info.value.message) > len(f"{str(path)!r} is not a valid tokenizer.json: ")


def test_load_tokenizer_wrong_type():
    with pytest.raises(ConfigError, match="got int"):
        load_tokenizer(42)


# ---- any document: long, adversarial, cut in pieces ----------------------------------------------
# The reference is always the whole document through plain tokenizers, never our own code path.

O200K_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
                 r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SHAPES = ("gpt2", "gpt2_prefix_space", "llama3", "o200k")


def split_then_byte_level(pattern: str):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


@pytest.fixture(scope="module")
def shaped(byte_bpe) -> dict[str, Tokenizer]:
    """Byte-level BPEs with each pre-tokenizer whose documents may be cut."""
    return {"gpt2": byte_bpe,
            "gpt2_prefix_space": train_byte_level_bpe(800, pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=True)),
            "llama3": train_byte_level_bpe(800, pre_tokenizer=split_then_byte_level(LLAMA3_PATTERN)),
            "o200k": train_byte_level_bpe(800, pre_tokenizer=split_then_byte_level(O200K_PATTERN))}


def whole_document_ids(tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    reference = Tokenizer.from_str(tokenizer.to_str())
    reference.encode_special_tokens = True
    return [np.array(reference.encode(text, add_special_tokens=False).ids, dtype=np.uint32)
            for text in texts]


def run_of(unit: str, chars: int = 1_000_000) -> str:
    return unit * -(-chars // len(unit))


@pytest.mark.slow
@pytest.mark.parametrize("text", ["a" + run_of(" "), run_of(" \n") + "b", "x " + run_of("\u00a0") + " 12 !",
                                  "a" + run_of("\u3000") + "b"], ids=["space", "space-newline", "nbsp", "ideographic"])
def test_whitespace_run_that_overflows_tiktokens_regex_gets_the_tokenizers_ids(byte_bpe, text):
    # fancy-regex keeps a backtrack point per character of `\s+(?!\S)`: ~1M of them overflow it.
    fast = TextEncoder(byte_bpe)  # backend="auto": the default path of the loader
    assert fast.backend == "tiktoken"
    with pytest.raises(ValueError, match="backtrack"):
        fast._bpe.encode(text)  # the case is real: tiktoken alone fails on it
    texts = ["before", text, "after"]
    assert_same_ids(whole_document_ids(byte_bpe, texts), fast.submit(texts).result())


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["llama3", "o200k"])
def test_other_regexes_with_long_whitespace_runs_get_the_tokenizers_ids(shaped, shape):
    texts = ["a" + run_of(" "), "x" + run_of("\t") + "\ny"]
    fast = TextEncoder(shaped[shape], backend="tiktoken")
    assert_same_ids(whole_document_ids(shaped[shape], texts), fast.encode_batch(texts))


@pytest.mark.slow
def test_long_runs_of_one_kind_of_character_agree(byte_bpe):
    units = ["a", "A", "Ab", "1", "12 ", "!", ".,;", "漢", "aé漢1!", "e\u0301", "'s", " a", " !",
             "\n", "\r\n", " \n\n", "😀", "\u200b"]
    texts = [run_of(unit, 200_000) for unit in units]
    slow, fast = TextEncoder(byte_bpe, backend="tokenizers"), TextEncoder(byte_bpe, backend="tiktoken")
    want = whole_document_ids(byte_bpe, texts)
    assert_same_ids(want, fast.encode_batch(texts))
    assert_same_ids(want, slow.encode_batch(texts))


@pytest.mark.slow
def test_document_over_a_mebibyte_without_a_place_to_cut_is_encoded_whole(byte_bpe):
    texts = ["the" * 400_000 + " end", "word" + "1" * 1_100_000 + " x"]
    want = whole_document_ids(byte_bpe, texts)
    for backend in ("tiktoken", "tokenizers"):
        assert_same_ids(want, TextEncoder(byte_bpe, backend=backend).encode_batch(texts))


# Characters where the regexes' alternatives meet: letters of both cases, apostrophes that
# start contractions, digits, punctuation, every kind of whitespace, marks, other scripts.
TRICKY = ["a", "b", "s", "t", "A", "Z", " ", " ", " ", "  ", "'", "'s", "'T", "1", "42", "!", ".", "/",
          "\n", "\r\n", "\t", "\u00a0", "\u3000", "\u2009", "é", "e\u0301", "漢", "ß", "\u200b", "😀"]


def fuzz_texts(num: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(TRICKY, size=length)) for _ in range(num)]


@pytest.mark.parametrize("shape", SHAPES)
def test_cut_documents_give_the_whole_documents_ids(shaped, shape, monkeypatch):
    from hfstream.tokens import long_texts

    monkeypatch.setattr(long_texts, "PIECE_CHARS", 40)  # a cut every ~40 characters
    texts = fuzz_texts(150, 400, seed=SHAPES.index(shape)) + [t * 3 for t in TOPIC_TEXTS[:5]]
    texts += ["it's A B  c \n d\te 'S f's g1 h! i\u00a0j k\u3000l e\u0301 m漢 n" * 20]
    pieces = [long_texts.cut_text(t, 40) for t in texts]
    assert sum(map(len, pieces)) > 4 * len(texts)  # many cuts, all before " " after [A-Za-z]
    assert all(p[-1].isascii() and p[-1].isalpha() and q[0] == " "
               for cut in pieces for p, q in zip(cut, cut[1:]))
    want = whole_document_ids(shaped[shape], texts)
    for backend in ("tiktoken", "tokenizers"):
        encoder = TextEncoder(shaped[shape], backend=backend)
        assert encoder._cut_long
        assert_same_ids(want, encoder.encode_batch(texts))
        assert_same_ids(want, encoder.submit(texts).result())


@pytest.mark.parametrize("kind", ["wordpiece", "unknown_split_regex", "nfc_normalizer"])
def test_other_tokenizers_encode_long_documents_whole(kind, wordpiece, byte_bpe, monkeypatch):
    from hfstream.tokens import long_texts

    if kind == "wordpiece":
        tokenizer = wordpiece
    elif kind == "unknown_split_regex":
        tokenizer = train_byte_level_bpe(500, pre_tokenizer=split_then_byte_level(r"\S+\s*"))
    else:
        tokenizer = edit_json(byte_bpe, lambda c: c.update(normalizer={"type": "NFC"}))
    monkeypatch.setattr(long_texts, "PIECE_CHARS", 40)
    texts = ["a b " * 100, "x  y\n" * 50 + "z"]
    encoder = TextEncoder(tokenizer)
    assert not encoder._cut_long
    assert_same_ids(whole_document_ids(tokenizer, texts), encoder.encode_batch(texts))
