"""Outputs that load elsewhere: the GPT as a transformers GPT-2 with the same logits; runs as HF directories."""

import json

import pytest
import torch

from hfstream.cli.main import main as hfstream_main
from hfstream.cli.train import main as train_main
from hfstream.errors import ConfigError
from hfstream.tokens.encoder import TextEncoder
from hfstream.train.checkpoint import load_checkpoint
from hfstream.train.config import ModelConfig
from hfstream.train.model import GPT
from hfstream.train.models import model_from_checkpoint

transformers = pytest.importorskip("transformers")

RUN = """
data: {{dataset: {dataset}, eval_docs: 4, shuffle_buffer_size: 16, fetch_batch_size: 25}}
tokenizer: {{path: {tokenizer}}}
model: {{n_layer: 1, n_head: 2, n_embd: 32, seq_len: 32}}
optim: {{learning_rate: 1.0e-2, warmup_steps: 1}}
train: {{output_dir: {output}, max_steps: 3, batch_size: 2, logging_steps: 1, eval_steps: 0, save_steps: 0}}
sample: {{prompts: ["doc"], sample_steps: 0, max_new_tokens: 4}}
"""


@pytest.fixture
def dataset(tmp_path, texts):
    from conftest import write_jsonl

    return write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])


def train_run(tmp_path, dataset, tokenizer_path, name="run", *overrides):
    config = tmp_path / f"{name}.yaml"
    config.write_text(RUN.format(dataset=dataset, tokenizer=tokenizer_path, output=tmp_path / name))
    assert train_main(["--config", str(config), "-q", *overrides]) == 0
    return tmp_path / name


@pytest.mark.parametrize("bias", [False, True])
def test_gpt_converts_to_gpt2_with_identical_logits(bias):
    from hfstream.train.export import gpt_to_gpt2

    torch.manual_seed(0)
    gpt = GPT(ModelConfig(n_layer=2, n_head=4, n_embd=32, seq_len=24, vocab_size=128, bias=bias)).eval()
    if bias:  # non-zero biases, so that their placement is tested too
        with torch.no_grad():
            for name, p in gpt.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
    hf = gpt_to_gpt2(gpt, eos_id=0)
    x = torch.randint(0, 128, (3, 24))
    ours, _ = gpt(x, x)
    with torch.no_grad():
        theirs = hf(input_ids=x).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert hf.config.activation_function == "gelu" and hf.config.n_positions == 24


def test_export_of_a_trained_run_loads_with_auto_classes_and_generates(tmp_path, dataset, tokenizer_path, capsys):
    run = train_run(tmp_path, dataset, tokenizer_path)
    assert (run / "hf" / "config.json").is_file()          # written at the end of the run (transformers installed)
    assert hfstream_main(["export", str(run), str(tmp_path / "out")]) == 0
    assert "AutoModelForCausalLM.from_pretrained" in capsys.readouterr().out
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    ours = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    encoder = TextEncoder(tokenizer_path)
    text = "doc 7: alpha beta café 東京"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == encoder.encode(text).tolist()   # the same tokens, no BOS added
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == encoder.eos_id
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ours(ids, ids)[0], rtol=1e-5, atol=1e-5)
        out = model.generate(ids, max_new_tokens=5, do_sample=False)
    greedy = ours.generate(ids, 5, temperature=0.0)
    assert out[0].tolist() == greedy[0, :out.shape[1]].tolist()  # generate() stops at EOS, ours may not
    assert tokenizer.decode(out[0][:ids.shape[1]]) == text
    # the directory at the end of the run is the same model
    again = transformers.AutoModelForCausalLM.from_pretrained(run / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)


def test_export_refuses_a_non_empty_directory_and_a_missing_run(tmp_path, dataset, tokenizer_path, capsys):
    run = train_run(tmp_path, dataset, tokenizer_path, "run", "train.export=false")
    assert not (run / "hf").exists()                        # train.export: false
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    assert hfstream_main(["export", str(run), str(tmp_path / "busy")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert hfstream_main(["export", str(run), str(tmp_path / "busy"), "--overwrite"]) == 0
    assert (tmp_path / "busy" / "model.safetensors").is_file() and not (tmp_path / "busy" / "file").exists()
    assert hfstream_main(["export", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_without_transformers_export_and_hf_flags_name_the_install_command(tmp_path, dataset, tokenizer_path,
                                                                        monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # as if not installed
    config = tmp_path / "c.yaml"
    config.write_text(RUN.format(dataset=dataset, tokenizer=tokenizer_path, output=tmp_path / "r"))
    assert train_main(["--config", str(config), "-q", "--config_name", "configs/llama-tiny"]) == 2
    err = capsys.readouterr().err
    assert "needs the transformers library" in err and 'pip install "hfstream[hf]"' in err
    assert not (tmp_path / "r").exists()                    # checked before anything is written
    assert train_main(["--config", str(config), "-q", "train.export=true"]) == 2
    assert 'pip install "hfstream[hf]"' in capsys.readouterr().err
    # left null, export is skipped without transformers: the run itself needs nothing optional
    assert train_main(["--config", str(config), "-q"]) == 0
    assert not (tmp_path / "r" / "hf").exists()
    assert hfstream_main(["export", str(tmp_path / "r"), str(tmp_path / "o")]) == 2
    assert 'pip install "hfstream[hf]"' in capsys.readouterr().err


def test_export_from_python_writes_the_tokenizer_special_tokens(tmp_path, tokenizer_path):
    from hfstream.train.export import export_model

    gpt = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, seq_len=16, vocab_size=640))
    out = export_model(gpt, TextEncoder(tokenizer_path), tmp_path / "x")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["eos_token"] == config["bos_token"] == "<|endoftext|>"
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 0
    with pytest.raises(ConfigError, match="not empty"):
        export_model(gpt, TextEncoder(tokenizer_path), out)
