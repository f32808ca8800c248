"""What a run tells the person watching: its description, metric windows, samples, the curve and the summary."""

from __future__ import annotations

import hashlib
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hfstream.rundir import read_metrics
from hfstream.train.config import Config, ModelConfig
from hfstream.train.distributed import Ranks
from hfstream.train.model import CausalLM
from hfstream.train.plotting import plot_training_curve

log = logging.getLogger("hfstream.train")


def describe_run(config: Config, ddp: Ranks, model_config: ModelConfig, model: CausalLM, encoder: Any,
                 tokens_per_step: int, num_heldout: int, device: torch.device,
                 dtype: torch.dtype) -> dict[str, Any]:
    """What this run does, for the log and run_info.json: global batch and data order included."""
    d, t = config.data, config.train
    info = {
        "world_size": ddp.world_size, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "params": model.num_params(), "vocab_size": model_config.vocab_size,
        "tokenizer": {"fingerprint": encoder.fingerprint, "vocab_size": encoder.vocab_size,
                      "backend": encoder.backend},
        "global_batch": {"sequences_per_rank": t.batch_size, "seq_len": model_config.seq_len,
                         "gradient_accumulation_steps": t.gradient_accumulation_steps,
                         "ranks": ddp.world_size, "tokens_per_step": tokens_per_step},
        "data_order": {"dataset": d.dataset if not d.streams else "mixture", "streams": d.streams,
                       "mix_by": d.mix_by, "epoch_size": d.epoch_size, "batching_method": d.batching_method,
                       "shards": ddp.world_size, "shard_by": d.shard_by,
                       "file_order_seed": t.seed if d.shuffle_files else None, "epochs": d.epochs,
                       "shuffle_buffer_size": d.shuffle_buffer_size,
                       "shuffle_seeds": [t.seed + r for r in range(ddp.world_size)],
                       "heldout_documents": num_heldout},
    }
    epochs = "repeated forever" if d.epochs is None else f"{d.epochs} epoch(s)"
    files = f"file order shuffled per epoch, seed {t.seed}" if d.shuffle_files else "files in sorted order"
    info["lines"] = [
        f"model: {model.describe()} on {device} in {info['dtype']}",
        f"global batch: {t.batch_size} sequences x {model_config.seq_len} tokens x "
        f"{t.gradient_accumulation_steps} accumulation x {ddp.world_size} rank(s) = "
        f"{tokens_per_step:,} tokens/step; {t.max_steps:,} steps = {t.max_steps * tokens_per_step:,} tokens",
        f"data order: rank r streams shard r/{ddp.world_size} of "
        f"{d.dataset if not d.streams else _describe_mixture(d)} (shard_by={d.shard_by}, "
        f"{epochs}, {files}), shuffled in a {d.shuffle_buffer_size:,}-document "
        f"buffer seeded {t.seed}+r; the first {num_heldout:,} documents are held out for evaluation",
    ]
    return info


def _describe_mixture(d: Any) -> str:
    weights = ", ".join(f"{st.get('label', st['dataset'])}"
                        + "".join(f" {k}={st[k]}" for k in ("proportion", "repeat", "choose") if k in st)
                        for st in d.streams)
    return f"a mixture by {d.mix_by} ({weights}; epoch_size={d.epoch_size}, {d.batching_method} batches)"


class Window:
    """Loss, time, data wait and tokens since the last log line."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.seconds = self.waited = 0.0
        self.tokens = 0
        self.steps_total = 0

    def add(self, loss: torch.Tensor, seconds: float, waited: float, tokens: int) -> None:
        self.losses.append(loss)
        self.seconds += seconds
        self.waited += waited
        self.tokens += tokens
        self.steps_total += 1

    def flush(self, ddp: Ranks, device: torch.device, step: int, lr: float, tokens_seen: int) -> dict:
        loss = torch.stack(self.losses).mean()
        if ddp.enabled:
            loss = loss.to(device if ddp.backend == "nccl" else "cpu")
            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
            loss = loss / ddp.world_size
        record = {"step": step, "loss": loss.item(), "lr": lr, "tokens": tokens_seen,
                  "tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
                  "data_wait_pct": 100 * self.waited / self.seconds if self.seconds else 0.0}
        self.losses, self.seconds, self.waited, self.tokens = [], 0.0, 0.0, 0
        return record


@torch.no_grad()
def generate_samples(model: CausalLM, encoder: Any, config: Config, device: torch.device,
                     autocast: Any) -> list[str]:
    """One continuation per configured prompt; the same seed each time, so samples compare."""
    s = config.sample
    generator = torch.Generator().manual_seed(config.train.seed)
    model.eval()
    texts = []
    for prompt in s.prompts:
        ids = encoder.encode(prompt).tolist() or [encoder.eos_id]
        x = torch.tensor([ids], dtype=torch.long, device=device)
        with autocast:
            y = model.generate(x, s.max_new_tokens, s.temperature, s.top_k, generator=generator,
                               stop_id=encoder.eos_id)
        texts.append(encoder.decode(y[0, len(ids):].tolist()))
    model.train()
    return texts


def plot(output: Path, config: Config) -> None:
    """``training_curve.png`` from the run's ``metrics.jsonl``."""
    m = config.model
    shape = (f"{m.n_layer} layers x {m.n_embd}" if m.name_or_path is None and m.config_name is None
             else m.name_or_path or m.config_name)
    title = f"{config.data.dataset}: {shape} (seq {m.seq_len})"
    plot_training_curve(read_metrics(output / "metrics.jsonl"), output / "training_curve.png", title)


def say(bar: Any, message: str) -> None:
    """A line for the person watching: above the progress bar, or through logging."""
    if bar is not None and not bar.disable:
        bar.write(message, file=sys.stderr)
    else:
        log.info("%s", message)


def perplexity(loss: float | None) -> float | None:
    return math.exp(min(loss, 50)) if loss is not None else None


def done_line(summary: dict[str, Any]) -> str:
    """The CLI's last line: steps and tokens (in all, and in this segment after a resume), the
    segment's rate, the losses and where the outputs are."""
    seg = summary["segment"]
    rate = (f"{seg['wall_s']:.1f}s; {seg['tokens_per_s']:,.0f} tokens/s, data wait "
            f"{seg['data_wait_pct']:.2f}%")
    if seg["steps"] == summary["steps"]:
        progress = f"{summary['steps']} steps, {summary['tokens']:,} tokens in {rate}"
    else:
        progress = (f"{summary['steps']} steps, {summary['tokens']:,} tokens in all; this segment: "
                    f"{seg['steps']} steps, {seg['tokens']:,} tokens in {rate}")
    eval_text = (f"{summary['final_eval_loss']:.4f} (perplexity {summary['final_eval_ppl']:,.2f})"
                 if summary["final_eval_loss"] is not None else "n/a")
    train_text = f"{summary['final_train_loss']:.4f}" if summary["final_train_loss"] is not None else "n/a"
    return (f"{'interrupted' if summary['interrupted'] else 'done'}: {progress}; train loss {train_text}, "
            f"eval loss {eval_text}; outputs in {summary['output_dir']}")


def batch_record(step: int, micro: int, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """What ``train.record_batches`` writes per micro-batch: a hash and the packed rows.

    ``rows`` (B, T+1) are the inputs plus the last target: the exact token stream trained on.
    """
    digest = hashlib.sha1(inputs.numpy().tobytes() + targets.numpy().tobytes()).hexdigest()
    rows = torch.cat([inputs, targets[:, -1:]], dim=1)  # (B, T) + (B, 1) -> (B, T+1)
    return {"step": step, "micro": micro, "sha1": digest, "rows": rows.tolist()}
