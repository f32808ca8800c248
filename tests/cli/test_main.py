"""The hfstream command: head, scan (single dataset and --streams mixtures), errors, datasets."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import BAD_FILES, make_texts, write_bad_file, write_jsonl
from hfstream.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_head_prints_the_first_documents(tmp_path, capsys):
    texts = make_texts(20)
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    assert main(["head", "--dataset", str(path), "-n", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["text"] for line in lines] == texts[:3]


def test_scan_reports_documents_and_rates(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in make_texts(50)])
    assert main(["scan", "--dataset", str(path), "--epochs", "2", "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 100 and summary["mb_per_s"] > 0 and summary["restarts"] == 0


def test_scan_a_mixture_file(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}"} for i in range(100)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(200)])
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"streams:\n  - {{dataset: {a}, proportion: 0.25}}\n  - {{dataset: {b}, proportion: 0.75}}\n"
                   "epoch_size: 400\nseed: 1\n")
    assert main(["scan", "--streams", str(mix), "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["documents"] == 400
    assert "realized proportions" in captured.err


def test_errors_are_one_clear_message_and_exit_code_2(tmp_path, capsys):
    assert main(["head", "--dataset", str(tmp_path / "missing.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no such file") and "HINT:" in err
    bad = tmp_path / "mix.yaml"
    bad.write_text("streams: [{dataset: x.jsonl}]\nepochsize: 3\n")
    assert main(["scan", "--streams", str(bad)]) == 2
    assert "unknown key 'epochsize'" in capsys.readouterr().err


def test_datasets_lists_the_builtin_corpus_and_the_module_runs(capsys):
    assert main(["datasets"]) == 0
    assert "builtin:python-docs" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "hfstream.cli.main", "head", "--dataset", "builtin:python-docs",
                          "-n", "1", "--chars", "80"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("--- document 0")


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_bad_file_is_one_error_and_hint_without_a_traceback(tmp_path, capsys, kind):
    path, match = write_bad_file(tmp_path, kind)
    assert main(["head", "--dataset", str(path), "-n", "100000"]) == 2  # past the damage
    err = capsys.readouterr().err
    assert re.search(match, err) and "HINT:" in err
    assert "Traceback" not in err and "worker stderr" not in err and "see the worker output" not in err


def _cli(args: list[str], python: str = sys.executable) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)  # this checkout, for the CLI and its worker alike
    return subprocess.run([python, "-m", "hfstream.cli.main", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_an_unreadable_file_is_one_error_and_the_traceback_is_there_with_v(tmp_path, unreadable):
    make_unreadable, python = unreadable
    path = make_unreadable(write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}]))
    quiet = _cli(["head", "--dataset", str(path)], python)
    assert quiet.returncode == 2, quiet.stderr
    assert "error: " in quiet.stderr and "permission denied" in quiet.stderr and "HINT:" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    verbose = _cli(["-v", "head", "--dataset", str(path)], python)
    assert verbose.returncode == 2
    assert any("Traceback" in line and "hfstream.worker DEBUG" in line for line in verbose.stderr.splitlines())
    assert "PermissionError" in verbose.stderr


def _options(parser, name):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _options(subparser, f"{name} {sub}")
        elif action.option_strings:
            yield name, action


def test_every_option_of_every_command_has_help_and_shows_its_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no line break inside "(default: ...)"
    import argparse

    from hfstream.cli import main as hfstream_main, train, train_tokenizer

    parsers = [(hfstream_main.build_parser(), "hfstream"), (train.build_parser(), "train-streaming"),
               (train_tokenizer.build_parser(), "train-tokenizer-streaming")]
    bare = [f"{name} {action.option_strings[0]}" for parser, prog in parsers for name, action in _options(parser, prog)
            if not action.help]
    assert bare == []
    serve_help = hfstream_main.build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    assert "(default: 8000)" in serve_help and "(default: 128)" in serve_help and "(default: 1000)" in serve_help
    assert argparse.SUPPRESS not in serve_help
