"""Training config: YAML mirrors the dataclasses, overrides, and errors that name the key."""

from pathlib import Path

import pytest

from hfstream.train.config import (Config, all_keys, apply_overrides, config_from_dict, config_to_dict,
                             config_to_yaml, load_config, resolve_key)
from hfstream.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    config = load_config()
    assert config == Config()
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.model.n_embd % config.model.n_head == 0
    assert config_from_dict(config_to_dict(config)) == config


def test_shipped_configs_include_tiny_gpt2_small_and_a_1b():
    names = {p.name for p in CONFIGS}
    assert {"tiny.yaml", "gpt2-small.yaml"} <= names
    assert any("1b" in n for n in names)


def test_a_partial_file_keeps_the_other_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  n_layer: 2\ntrain:\n  max_steps: 7\n")
    config = load_config(path)
    assert config.model.n_layer == 2 and config.train.max_steps == 7
    assert config.model.n_head == Config().model.n_head


@pytest.mark.parametrize("text, match, hint", [
    ("model:\n  n_layr: 2\n", "unknown key model.n_layr", "did you mean model.n_layer"),
    ("modle:\n  n_layer: 2\n", "unknown section 'modle'", "did you mean 'model'"),
    ("train:\n  learning_rate: 0.1\n", "unknown key train.learning_rate", "optim.learning_rate"),
    ("n_layer: 2\n", "unknown section 'n_layer'", "write it under 'model:'"),
    ("model:\n  n_layer: four\n", "model.n_layer must be an integer, got 'four'", "whole number"),
    ("model:\n  n_layer: 2.5\n", "model.n_layer must be an integer", ""),
    ("train:\n  compile: 'yes'\n", "train.compile must be true or false", ""),
    ("train:\n  device: cdua\n", "train.device='cdua' is not one of", "did you mean 'cuda'"),
    ("sample:\n  prompts: hello\n", "sample.prompts must be a list", ""),
    ("optim:\n  learning_rate: fast\n", "optim.learning_rate must be a number", ""),
    ("model: 3\n", "section 'model' must be a mapping", ""),
    ("- a\n- b\n", "not a mapping of sections", ""),
    ("model:\n  n_embd: 100\n  n_head: 3\n", "not divisible", ""),
    ("train:\n  batch_size: 0\n", "train.batch_size must be >= 1", ""),
    ("model: {n_layer: [1\n", "not valid YAML", ""),
])
def test_bad_files_name_the_key_and_the_fix(tmp_path, text, match, hint):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert hint in str(info.value)


def test_yaml_1_1_exponent_strings_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 3e-4\n  eps: 1e-8\ntrain:\n  max_steps: 1e3\n")
    config = load_config(path)
    assert config.optim.learning_rate == 3e-4 and config.optim.eps == 1e-8
    assert config.train.max_steps == 1000 and isinstance(config.train.max_steps, int)


def test_missing_file_suggests_a_near_name(tmp_path):
    (tmp_path / "tiny.yaml").write_text("")
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(tmp_path / "tiny.yml")
    assert "tiny.yaml" in str(info.value)


def test_overrides_by_section_key_or_bare_key_from_strings():
    config = apply_overrides(Config(), {"model.n_layer": "3", "learning_rate": "1e-3",
                                        "data.name": "2024", "top_k": "null",
                                        "data.data_files": "[a.parquet, b.parquet]",
                                        "prompts": "[Once upon, The]", "compile": "true"})
    assert config.model.n_layer == 3 and config.optim.learning_rate == 1e-3
    assert config.data.name == "2024"                 # a str field keeps "2024" as text
    assert config.sample.top_k is None
    assert config.data.data_files == ["a.parquet", "b.parquet"]
    assert config.sample.prompts == ["Once upon", "The"]
    assert config.train.compile is True


@pytest.mark.parametrize("key, match, hint", [
    ("n_layr", "unknown config key 'n_layr'", "model.n_layer"),
    ("model.n_layr", "unknown config key 'model.n_layr'", "model.n_layer"),
    ("optimizer.learning_rate", "unknown config section 'optimizer'", "'optim'"),
    ("max_samples", "ambiguous", "data.max_samples"),
])
def test_bad_override_keys(key, match, hint):
    with pytest.raises(ConfigError, match=match) as info:
        apply_overrides(Config(), {key: "1"})
    assert hint in str(info.value)


def test_override_values_are_typed_too():
    with pytest.raises(ConfigError, match="train.max_steps must be an integer, got 'lots'"):
        apply_overrides(Config(), {"train.max_steps": "lots"})
    with pytest.raises(ConfigError, match="data.epochs must be >= 1 or null"):
        apply_overrides(Config(), {"data.epochs": 0})


def test_every_key_resolves():
    for key in all_keys():
        assert resolve_key(key) == tuple(key.split(".", 1))


def test_shuffle_buffer_size_0_is_accepted_like_the_loader_accepts_it():
    from hfstream.train.config import load_config

    assert load_config(None, {"data.shuffle_buffer_size": 0}).data.shuffle_buffer_size == 0


def test_an_empty_config_file_says_that_defaults_are_used(tmp_path, caplog):
    import logging

    from hfstream.train.config import load_config

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with caplog.at_level(logging.WARNING, logger="hfstream.config"):
        config = load_config(empty)
    assert config.model.n_layer == 6
    assert "empty.yaml is empty: every setting takes its default" in caplog.text


def test_data_section_keys_are_the_source_options(tmp_path):
    from hfstream.source.spec import source_options
    from hfstream.train.config import DataConfig, data_source_keys

    fields = {f for f in DataConfig.__dataclass_fields__}
    assert set(data_source_keys()) <= fields and "ws_field" in fields
    assert {"shard", "num_shards", "seed"}.isdisjoint(fields)   # per rank, or train.seed
    assert set(data_source_keys()) == {o.name for o in source_options()} - {"shard", "num_shards", "seed"}
    assert list(DataConfig.__dataclass_fields__)[0] == "dataset"   # YAML dumps start with it


def test_example_configs_by_name_from_any_directory(monkeypatch, tmp_path):
    from hfstream.errors import ConfigError
    from hfstream.train.config import example_configs, load_config

    monkeypatch.chdir(tmp_path)
    assert {"tiny", "gpt2-small", "gpt-1b"} <= set(example_configs())
    assert load_config("tiny").train.output_dir == load_config("configs/tiny.yaml").train.output_dir
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_config("tinny")
