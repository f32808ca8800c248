"""DCP-ready state: the loader and a training state through torch.distributed.checkpoint, 2 gloo ranks."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.stateful import Stateful

from conftest import make_texts, write_jsonl
from hfstream import StreamingTextDataLoader
from hfstream.errors import StateError
from hfstream.loader.dcp import RankedState
from hfstream.train.config import ModelConfig
from hfstream.train.dcp import TrainState
from hfstream.train.model import GPT

ROOT = Path(__file__).resolve().parents[2]

# Run by torchrun on 2 CPU processes (DDP): "save" takes 3 steps, saves through DCP and takes 3 more;
# "load" starts afresh, loads the checkpoint and takes 3 steps. Each rank writes what it saw.
SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    import torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
    from hfstream import StreamingTextDataLoader
    from hfstream.loader.dcp import RankedState
    from hfstream.train.config import ModelConfig
    from hfstream.train.dcp import TrainState
    from hfstream.train.model import GPT

    mode, out, data, tokenizer = sys.argv[1:5]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    loader = StreamingTextDataLoader(data, tokenizer, batch_size=2, seq_len=16, shuffle_buffer_size=8,
                                     seed=rank, epochs=None, shard=rank, num_shards=world)
    torch.manual_seed(0)
    gpt = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, seq_len=16, vocab_size=640))
    optimizer = gpt.configure_optimizer(1e-2, 0.1)
    model = torch.nn.parallel.DistributedDataParallel(gpt)  # replicated weights, as DCP expects
    train = TrainState(model, optimizer, loader)
    extra = RankedState(loader)  # the loader alone, as a torchtitan trainer would hold it

    def steps(n):
        seen = []
        for _, (inputs, targets) in zip(range(n), loader):
            _, loss = model(inputs, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            train.step += 1
            seen.append([hashlib.sha1(inputs.numpy().tobytes()).hexdigest(), round(loss.item(), 6),
                         torch.rand(()).item()])
        return seen

    if mode == "save":
        steps(3)
        dcp.save({"train": train, "dataloader": extra}, checkpoint_id=f"{out}/ckpt")
        seen = steps(3)
    else:
        dcp.load({"train": train, "dataloader": extra}, checkpoint_id=f"{out}/ckpt")
        seen = steps(3)
    with open(f"{out}/{mode}-rank{rank}.json", "w") as f:
        json.dump({"step": train.step, "seen": seen}, f)
    loader.close()
    dist.destroy_process_group()
""")


@pytest.fixture
def shards(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for k in range(2):
        write_jsonl(data / f"part-{k}.jsonl", [{"text": t} for t in make_texts(40, seed=k, prefix=f"s{k}")])
    return data


def torchrun(tmp_path, mode, shards, tokenizer_path):
    script = tmp_path / "dcp_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), mode, str(tmp_path), str(shards), str(tokenizer_path)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads((tmp_path / f"{mode}-rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_dcp_save_and_load_with_two_gloo_ranks_gives_the_same_batches(tmp_path, shards, tokenizer_path):
    after_save = torchrun(tmp_path, "save", shards, tokenizer_path)
    assert (tmp_path / "ckpt" / ".metadata").is_file()
    restored = torchrun(tmp_path, "load", shards, tokenizer_path)
    for rank in (0, 1):
        # the same batches, losses (model + optimizer) and random draws after the restore
        assert restored[rank] == after_save[rank]
        assert restored[rank]["step"] == 6
    assert after_save[0]["seen"][0][0] != after_save[1]["seen"][0][0]   # each rank: its own shard


def test_the_loader_and_the_train_state_are_stateful(tokenizer_path, texts):
    loader = StreamingTextDataLoader(texts, tokenizer_path, 2, 16, 0)
    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, seq_len=16, vocab_size=640))
    train = TrainState(model, model.configure_optimizer(1e-3, 0.1), loader)
    assert isinstance(loader, Stateful) and isinstance(RankedState(loader), Stateful)
    assert isinstance(train, Stateful)
    loader.close()


def test_train_state_round_trips_through_torch_save(tmp_path, tokenizer_path, texts):
    """One process, a plain file: the same Stateful, no process group."""
    def make():
        torch.manual_seed(0)
        model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, seq_len=16, vocab_size=640))
        loader = StreamingTextDataLoader(texts * 4, tokenizer_path, 2, 16, 0)
        return model, loader, TrainState(model, model.configure_optimizer(1e-2, 0.1), loader)

    def step(model, loader, state):
        inputs, targets = next(loader)
        _, loss = model(inputs, targets)
        loss.backward()
        state.optimizer.step()
        state.optimizer.zero_grad()
        state.step += 1
        return inputs, loss.item()

    model, loader, state = make()
    for _ in range(2):
        step(model, loader, state)
    torch.save(state.state_dict(), tmp_path / "state.pt")
    expected = [step(model, loader, state) for _ in range(2)]
    model2, loader2, state2 = make()
    state2.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    assert state2.step == 2
    got = [step(model2, loader2, state2) for _ in range(2)]
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(expected, got))
    loader.close()
    loader2.close()


def test_ranked_state_refuses_another_world_size_or_rank(tokenizer_path, texts):
    loader = StreamingTextDataLoader(texts, tokenizer_path, 2, 16, 0)
    saved = RankedState(loader, rank=1, world_size=2).state_dict()
    assert set(saved) == {"rank_1", "world_size"} and isinstance(saved["rank_1"], bytes)
    with pytest.raises(StateError, match="saved by 2 rank"):
        RankedState(loader, rank=0, world_size=4).load_state_dict(saved)
    with pytest.raises(StateError, match="no part for rank 0"):
        RankedState(loader, rank=0, world_size=2).load_state_dict(saved)
    loader.close()
