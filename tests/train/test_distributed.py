"""The trainer's collectives under two real gloo processes: agree, broadcast, gather."""

from __future__ import annotations

import json
import textwrap

from conftest import torchrun

SCRIPT = textwrap.dedent("""\
    import json, sys, torch
    from hfstream.train.distributed import agree, broadcast_object, gather_objects, init_distributed
    ddp = init_distributed("cpu")
    stop, done = agree(ddp, torch.device("cpu"), ddp.rank == 1, False)     # OR across ranks
    value = broadcast_object(ddp, {"from": ddp.rank} if ddp.is_main else None)
    gathered = gather_objects(ddp, {"rank": ddp.rank, "sq": ddp.rank ** 2})
    with open(f"{sys.argv[1]}/rank{ddp.rank}.json", "w") as f:   # stdout would interleave the ranks
        json.dump({"rank": ddp.rank, "world": ddp.world_size, "backend": ddp.backend, "stop": stop,
                   "done": done, "value": value, "gathered": gathered}, f)
    torch.distributed.destroy_process_group()
""")


def test_agree_broadcast_and_gather_across_two_ranks(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(SCRIPT)
    proc = torchrun(script, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["world"] == 2 and r["backend"] == "gloo" and r["stop"] is True and r["done"] is False
        assert r["value"] == {"from": 0}
    assert results[0]["gathered"] == [{"rank": 0, "sq": 0}, {"rank": 1, "sq": 1}] and results[1]["gathered"] is None


def test_without_torchrun_the_helpers_are_single_process_no_ops():
    import torch

    from hfstream.train.distributed import agree, broadcast_object, gather_objects, init_distributed

    ddp = init_distributed("cpu")
    assert not ddp.enabled and ddp.is_main and ddp.world_size == 1
    assert agree(ddp, torch.device("cpu"), True, False) == [True, False]
    assert broadcast_object(ddp, 5) == 5 and gather_objects(ddp, 6) == [6]
