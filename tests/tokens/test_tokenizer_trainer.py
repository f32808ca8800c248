"""train-tokenizer-streaming: byte-level BPE from a stream, the report, the CLI, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_texts, write_jsonl
from hfstream.cli.train_tokenizer import main
from hfstream.errors import ConfigError
from hfstream.tokens.encoder import TextEncoder
from hfstream.tokens.tokenizer_trainer import train_bpe, train_from_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def docs(tmp_path):
    from pydoc_data.topics import topics

    texts = list(topics.values()) + make_texts(300)   # 79 + 300 documents
    return write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts]), texts


def test_train_bpe_gives_a_gpt2_style_tokenizer_both_backends_run():
    texts = make_texts(300)
    tokenizer = train_bpe(iter(texts), vocab_size=320)
    assert tokenizer.get_vocab_size() == 320
    assert tokenizer.token_to_id("<|endoftext|>") == 0
    encoder = TextEncoder(tokenizer)           # auto: the tiktoken twin passes the self-check
    assert encoder.backend == "tiktoken" and encoder.eos_id == 0
    for text in texts[:20] + ["unseen wörds ✓ <|endoftext|>"]:
        assert encoder.decode(encoder.encode(text)) == text   # byte-level: lossless


def test_train_bpe_takes_lists_of_texts_and_custom_special_tokens():
    batches = [make_texts(50, seed=k) for k in range(4)]
    tokenizer = train_bpe(iter(batches), vocab_size=350, special_tokens=["<|endoftext|>", "<|pad|>"])
    assert tokenizer.token_to_id("<|pad|>") == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"vocab_size": 100}, "vocab_size=100 is too small"),
    ({"vocab_size": 400, "min_frequency": 0}, "min_frequency=0"),
    ({"vocab_size": 400, "special_tokens": ["<a>", "<a>"]}, "duplicates"),
    ({"vocab_size": 400, "special_tokens": "<a>"}, "list of non-empty strings"),
])
def test_bad_training_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        train_bpe(iter(["a b c"]), **kwargs)


class FakeCorpus:
    def __init__(self, texts, batch=7):
        self.texts, self.batch = texts, batch

    def stream_batches(self):
        for i in range(0, len(self.texts), self.batch):
            yield self.texts[i:i + self.batch]


def test_feed_counts_exactly_max_samples_and_skips_held_out_documents():
    texts = make_texts(100)
    skipped = set(texts[::10])
    tokenizer, report = train_from_corpus(FakeCorpus(texts), 50, 400, progress=False,
                                          holdout=texts[:5], skip=lambda t: t in skipped)
    trained = [t for t in texts if t not in skipped][:50]
    assert report.documents == 50
    assert report.bytes == sum(len(t.encode()) for t in trained)
    assert report.holdout_documents == 5 and report.holdout_tokens > 0
    assert report.bytes_per_token == round(report.holdout_bytes / report.holdout_tokens, 4)


def test_cli_trains_from_the_stream_and_reports(docs, tmp_path, capsys):
    path, texts = docs
    out = tmp_path / "tok"
    rc = main(["--dataset", str(path), "--max-samples", "200", "--vocab-size", "800",
               "--holdout-samples", "50", "--output", str(out), "--json", "-q"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 200 and report["holdout_documents"] == 50
    held = set(texts[:50])
    trained = [t for t in texts[50:] if t not in held][:200]   # after the head, minus its copies
    assert report["bytes"] == sum(len(t.encode()) for t in trained)
    assert report["vocab_size"] == 800 and 1.5 < report["bytes_per_token"] < 8
    assert report["seconds"] > 0 and report["docs_per_s"] > 0
    assert json.loads((out / "tokenizer_report.json").read_text()) == report
    encoder = TextEncoder(out)
    assert encoder.vocab_size == 800 and encoder.eos_id == 0
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_report.json"]


def test_cli_progress_bar_and_summary(docs, tmp_path, capsys):
    path, _ = docs
    rc = main(["--dataset", str(path), "--max-samples", "100", "--vocab-size", "600",
               "--special-tokens", "<|endoftext|>", "<|pad|>", "--output", str(tmp_path / "t")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "bytes per token" in captured.out and "tokenizer.json" in captured.out
    assert "doc/s" in captured.err and "100/100" in captured.err   # tqdm: docs/s and the total
    assert json.loads((tmp_path / "t" / "tokenizer_report.json").read_text())["holdout_documents"] == 10


@pytest.mark.parametrize("args, match", [
    (["--vocab-size", "100"], "too small"),
    (["--vocab-size", "600", "--dataset", "/no/such/file.jsonl"], "no such file"),
    (["--vocab-size", "600", "--text-column", "body"], "body"),
])
def test_cli_bad_input_is_a_clear_error_and_writes_nothing(docs, tmp_path, capsys, args, match):
    path, _ = docs
    out = tmp_path / "never"
    argv = ["--dataset", str(path), "--max-samples", "50", "--output", str(out), "-q"] + args
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "HINT:" in err
    assert not out.exists()


def test_cli_unwritable_output_directory(docs, tmp_path, capsys):
    path, _ = docs
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["--dataset", str(path), "--max-samples", "50", "--vocab-size", "600",
                 "--output", str(blocker / "sub"), "-q"]) == 2
    assert "cannot write to the output directory" in capsys.readouterr().err


def test_console_script_runs(docs, tmp_path):
    path, _ = docs
    script = Path(sys.executable).with_name("train-tokenizer-streaming")
    command = [str(script)] if script.exists() else [sys.executable, str(ROOT / "bins" / "train-tokenizer-streaming")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "tok"
    proc = subprocess.run(command + ["--dataset", str(path), "--max-samples", "80", "--vocab-size",
                                     "500", "--output", str(out), "-q"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "trained a 500-token byte-level BPE on 80 documents" in proc.stdout
    assert (out / "tokenizer.json").is_file()


def test_cli_trains_from_a_mixture_file(tmp_path):
    from conftest import make_texts, write_jsonl
    from hfstream.cli.train_tokenizer import main as tok_main

    a = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in make_texts(120, seed=1, prefix="alpha")])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in make_texts(120, seed=2, prefix="beta")])
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"streams:\n  - {{dataset: {a}, proportion: 1}}\n  - {{dataset: {b}, proportion: 3}}\n"
                   "epoch_size: 200\n")
    out = tmp_path / "tok"
    assert tok_main(["--streams", str(mix), "--vocab-size", "300", "--max-samples", "150", "--output",
                     str(out), "-q", "--json"]) == 0
    report = json.loads((out / "tokenizer_report.json").read_text())
    assert report["documents"] == 150 and (out / "tokenizer.json").exists()


def test_cli_full_disk_is_one_clear_error(docs, small_disk, capsys):
    from conftest import fill_disk

    path, _ = docs
    fill_disk(small_disk)
    rc = main(["--dataset", str(path), "--max-samples", "100", "--vocab-size", "600",
               "--output", str(small_disk / "tok")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"error: cannot write {small_disk / 'tok' / 'tokenizer.json'}: the disk is full" in err
    assert "no tokenizer.json was written" in err and "HINT:" in err and "Traceback" not in err
    assert not (small_disk / "tok").exists()  # a failed run leaves nothing behind
