"""The training loop behind ``train-streaming``: a stream of documents into a language model, one device or DDP.

It reads top to bottom like nanoGPT's ``train.py``: :class:`Run` sets up (device, checkpoint,
the data plan of :mod:`hfstream.train.plan`, model and optimizer, logs), :meth:`Run.loop`
takes the steps (log, evaluate, sample, save), :meth:`Run.finish` writes the final
checkpoint, curve, summary and Hugging Face export; what is printed and written is
:mod:`hfstream.train.report`'s and :mod:`hfstream.train.trackers`'. The model is the built-in
GPT or a transformers causal LM (:mod:`hfstream.train.models`), behind one interface.

    from hfstream.train.config import load_config
    from hfstream.train.trainer import train
    summary = train(load_config("configs/tiny.yaml"))

Under ``torchrun --nproc_per_node=N`` each rank streams shard ``rank`` of ``N`` through its
own worker, from a stream that never ends (``data.epochs: null``), so every rank takes exactly
``train.max_steps`` steps; with a finite stream all ranks stop together at the first rank that
runs dry. Rank 0 logs and saves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hfstream.errors import EmptyDatasetError
from hfstream.progress import progress_bar
from hfstream.rundir import MetricsLog, atomic_write_text
from hfstream.source.heldout import heldout_fingerprint
from hfstream.train import extras, plan, records, report
from hfstream.train.checkpoint import (CHECKPOINT_NAME, check_matches, completed_summary, keep_global_batch,
                                       open_checkpoint, save_checkpoint)
from hfstream.train.config import Config, config_to_dict, config_to_yaml
from hfstream.train.distributed import Ranks, agree, broadcast_object, gather_objects, init_distributed
from hfstream.train.evaluate import document_positions, evaluate, pack_rows
from hfstream.train.export import export_model
from hfstream.train.hf_model import check_source
from hfstream.train.models import build_model
from hfstream.train.runtime import (GracefulStop, choose_device, choose_dtype, configure_backends, restore_rng,
                                    rng_state)
from hfstream.train.schedule import learning_rate, schedule_state
from hfstream.train.trackers import Trackers

log = logging.getLogger("hfstream.train")


def train(config: Config, *, resume: str | os.PathLike[str] | bool | None = None,
          overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a model as ``config`` says; return the summary (also written to ``summary.json``).

    Args:
        resume: continue from a checkpoint: True for ``OUTPUT/checkpoint.pt``, or a path.
            A run that already reached ``train.max_steps`` is left as it is: the summary it
            wrote is returned with ``"complete": True``.
        overwrite: start afresh even if the output directory holds a checkpoint.
        progress: show a progress bar on rank 0 (else a log line per ``logging_steps``).

    Raises:
        ConfigError, StateError, ...: bad configuration, a missing, corrupt or mismatched
            checkpoint, an output directory that cannot be written -- all checked before
            training starts; checkpoints and logs are written atomically, and a new run that
            fails before writing anything removes the directory it created.
    """
    ddp = init_distributed(config.train.device)
    output = Path(config.train.output_dir).expanduser()
    created = not output.exists()
    try:
        run = Run(config, ddp, resume, overwrite, progress)
        if run.complete is not None:
            return run.complete
        try:
            run.loop()
            return run.finish()
        finally:
            run.close()
    except BaseException:
        if created and ddp.is_main:  # a run that failed before writing anything leaves no trace
            with contextlib.suppress(OSError):
                output.rmdir()
        raise
    finally:
        if ddp.enabled and dist.is_initialized():
            dist.destroy_process_group()


class Run:
    """One segment of a training run: a fresh start, or a resume from its checkpoint.

    Everything is checked before anything is written: the output directory, the checkpoint
    (tokenizer, model shape, held-out set and number of ranks must match), the data.
    """

    def __init__(self, config: Config, ddp: Ranks, resume: Any, overwrite: bool, progress: bool):
        self.config, self.ddp, self.progress = config, ddp, progress
        self.schedule_ranks = ddp.world_size  # the ranks a device_per_stream schedule is drawn for (elastic)
        self.started = time.perf_counter()
        t = config.train
        self.device = choose_device(t.device, ddp)
        self.dtype = choose_dtype(t.dtype, self.device)
        configure_backends(self.device, t.deterministic)
        extras.check_config(config)  # the optional libraries and the model's source, before anything is written
        check_source(config.model)
        self.output = Path(t.output_dir).expanduser()
        ckpt = open_checkpoint(resume, overwrite, self.output, ddp, t.max_steps, config.data.virtual_shards)
        # a run that already reached max_steps: its own summary, nothing is written
        self.complete = None if ckpt is None else completed_summary(ckpt, self.output, t.max_steps)
        if self.complete is not None:
            return
        if ckpt is not None and config.data.virtual_shards:  # an elastic resume keeps the global batch
            t.gradient_accumulation_steps = keep_global_batch(ckpt, t.batch_size, t.gradient_accumulation_steps,
                                                              ddp.world_size, t.adjust_accumulation)
            self.schedule_ranks = ckpt.get("schedule_ranks", ckpt["world_size"])
        self._plan_data(ckpt)
        self._build_model(ckpt)
        self.loader = plan.make_loader(config, ddp, self.encoder, self.heldout, self.device, self.schedule_ranks)
        self.metrics = self.samples_log = self.batch_log = self.trackers = self.docs_log = None
        try:
            self._start_data(ckpt)
            self._open_logs(ckpt)
        except BaseException:
            self.close()
            raise

    # -- setup --------------------------------------------------------------------------------
    def _plan_data(self, ckpt: dict[str, Any] | None) -> None:
        """The held-out slice and the tokenizer, checked against the checkpoint."""
        config, ddp, d = self.config, self.ddp, self.config.data
        self.heldout = broadcast_object(ddp, plan.read_heldout(config) if ddp.is_main else None)
        if d.eval_docs and len(self.heldout) < d.eval_docs:
            raise EmptyDatasetError(
                f"{d.dataset!r} has only {len(self.heldout)} documents, all held out (data.eval_docs="
                f"{d.eval_docs}): nothing would be left to train on", "lower data.eval_docs")
        self.heldout_id = heldout_fingerprint(self.heldout)
        if ckpt is not None:
            check_matches(ckpt, "heldout", self.heldout_id)
        self.encoder = plan.prepare_tokenizer(config, ddp, self.output, self.heldout, resuming=ckpt is not None)
        if ckpt is not None:
            check_matches(ckpt, "tokenizer", {"fingerprint": self.encoder.fingerprint,
                                              "vocab_size": self.encoder.vocab_size}, self.output)

    def _build_model(self, ckpt: dict[str, Any] | None) -> None:
        """Model, optimizer and grad scaler: initialized from the seed, or restored."""
        config, t, o = self.config, self.config.train, self.config.optim
        torch.manual_seed(t.seed)                      # the same initial weights on every rank
        self.model_config, raw_model = build_model(config.model, self.encoder.vocab_size, self.encoder.eos_id)
        if ckpt is not None:
            check_matches(ckpt, "model_config", dataclasses.asdict(self.model_config))
        self.raw_model = raw_model.to(self.device)
        self.optimizer = self.raw_model.configure_optimizer(o.learning_rate, o.weight_decay, (o.beta1, o.beta2),
                                                            o.eps, self.device.type)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.step = 0
        if ckpt is not None:
            self.raw_model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.step = ckpt["step"]
        torch.manual_seed(t.seed + 1 + self.ddp.rank)  # dropout differs across ranks
        if ckpt is not None and ckpt["world_size"] == self.ddp.world_size:  # (elastic: new ranks, fresh dropout)
            restore_rng(ckpt["ranks"][self.ddp.rank])
        model: torch.nn.Module = torch.compile(self.raw_model) if t.compile else self.raw_model
        if self.ddp.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.ddp.local_rank] if self.device.type == "cuda" else None)
        self.model = model
        self.autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                         else contextlib.nullcontext())

    def _start_data(self, ckpt: dict[str, Any] | None) -> None:
        """Evaluation rows, this rank's loader position; batches start being prepared now."""
        t, ddp = self.config.train, self.ddp
        self.eval_rows = pack_rows(self.encoder.encode_batch(self.heldout), self.encoder.eos_id,
                                   self.model_config.seq_len, max_rows=t.eval_batches * t.batch_size
                                   )[ddp.rank::ddp.world_size]
        # document-masked models are evaluated as they train: within the documents of each row
        self.eval_positions = (document_positions(self.eval_rows, self.encoder.eos_id)
                               if self.model_config.doc_mask else None)
        if ckpt is not None:
            self.loader.load_state_dict(plan.loader_state(self.config, ckpt, ddp.rank))
        self.loader.start()  # batches are prepared while the run sets up and evaluates step 0
        self.tokens_per_step = (t.batch_size * self.model_config.seq_len * t.gradient_accumulation_steps
                                * ddp.world_size)
        self.resumed_at = self.step if ckpt is not None else None
        self.elapsed_before = ckpt["elapsed_s"] if ckpt else 0.0
        self.train_s_before = ckpt.get("train_s", 0.0) if ckpt else 0.0
        self.tokens_seen = ckpt["tokens"] if ckpt else 0

    def _open_logs(self, ckpt: dict[str, Any] | None) -> None:
        """config.yaml, run_info.json, metrics/samples logs (rank 0), the batch log (each rank)."""
        config, t, ddp = self.config, self.config.train, self.ddp
        info = report.describe_run(config, ddp, self.model_config, self.raw_model, self.encoder,
                                   self.tokens_per_step, len(self.heldout), self.device, self.dtype)
        self.trackers = Trackers(t.report_to if ddp.is_main else [], self.output, config, self.resumed_at)
        if ddp.is_main:
            atomic_write_text(self.output / "config.yaml", config_to_yaml(config))
            atomic_write_text(self.output / "run_info.json", json.dumps(info, indent=2) + "\n")
            self.metrics = MetricsLog(self.output / "metrics.jsonl", resume_step=self.resumed_at)
            self.samples_log = MetricsLog(self.output / "samples.jsonl", resume_step=self.resumed_at)
            for line in info["lines"]:
                log.info(line)
        if t.record_batches:
            self.batch_log = MetricsLog(self.output / f"batches-rank{ddp.rank}.jsonl", resume_step=self.resumed_at)
        self.docs_log = records.open_docs_log(config, self.output, ddp.rank, ddp.world_size, self.resumed_at)

    # -- the loop -----------------------------------------------------------------------------
    def loop(self) -> None:
        """Train until max_steps, the end of the stream, or a signal (then checkpoint and stop)."""
        t, s = self.config.train, self.config.sample
        self.bar = progress_bar(total=t.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                                disable=not (self.progress and self.ddp.is_main), desc="train", smoothing=0.05)
        self.batches = iter(self.loader)
        self.window = report.Window()
        self.train_s = self.wait_s = 0.0
        self.last_loss = self.eval_loss = None
        self.stopped_by: str | None = None
        self.saved_at = self.step if self.resumed_at is not None else -1
        if self.step == 0 and t.eval_steps:
            self.run_eval()
        self.model.train()
        with GracefulStop() as stop:
            while self.step < t.max_steps:
                t0 = time.perf_counter()
                lr = learning_rate(self.step, self.config.optim, t.max_steps)
                micro = [b for _, b in zip(range(t.gradient_accumulation_steps), self.batches)]
                waited = time.perf_counter() - t0
                interrupted, exhausted = agree(self.ddp, self.device, stop.signal is not None,
                                               len(micro) < t.gradient_accumulation_steps)
                if exhausted:
                    if self.docs_log is not None:  # fetched, not trained: the audit counts them as the tail
                        self.docs_log.dropped(self.step, micro)
                    report.say(self.bar, f"the data stream ended after {self.step} steps (data.max_samples / "
                                         "data.epochs): stopping on every rank")
                    break
                loss = self.train_step(micro, lr)
                self.window.add(loss, time.perf_counter() - t0, waited, self.tokens_per_step)
                self.train_s += time.perf_counter() - t0
                self.wait_s += waited
                self.bar.update(1)
                if self.step % t.logging_steps == 0 or self.step == t.max_steps or interrupted:
                    self.log_window(lr)
                if interrupted:
                    self.stopped_by = stop.name or "signal"
                    break
                if self.step < t.max_steps:
                    self.periodic(t.eval_steps, self.run_eval)
                    self.periodic(s.sample_steps, self.run_samples)
                    self.periodic(t.save_steps, self.save)
        self.bar.close()
        if self.window.losses:  # steps since the last log line (the stream ended early)
            self.log_window(lr)

    def train_step(self, micro: list[Any], lr: float) -> torch.Tensor:
        """One optimizer step over the micro-batches (gradients synchronized on the last one)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            if self.batch_log is not None:
                self.batch_log.write(report.batch_record(self.step + 1, i, batch.inputs, batch.targets))
            if self.docs_log is not None:
                self.docs_log.write(self.step + 1, i, batch)
            batch = batch.to(self.device)  # positions too: the loader gives them when model.doc_mask is set
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if last or not self.ddp.enabled else self.model.no_sync()
            with sync:
                with self.autocast:
                    _, loss = self.model(batch.inputs, batch.targets, batch.positions)
                loss = loss / len(micro)
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        return loss_sum

    def periodic(self, every: int, action: Any) -> None:
        if every and self.step % every == 0:
            action()

    def log_window(self, lr: float) -> None:
        t = self.config.train
        record = self.window.flush(self.ddp, self.device, self.step, lr, self.tokens_seen)
        self.last_loss = record["loss"]
        shares = self.loader.metrics["stream_shares"]
        if shares is not None:
            record["stream_shares"] = shares  # this rank's realized mix
        if not self.ddp.is_main:
            return
        self.metrics.write(record)
        self.trackers.log(record)
        # The step the figures belong to: a log line may come after a few steps without a new window.
        self.bar.set_postfix_str(f"step {self.step}: loss {record['loss']:.3f} | {record['tokens_per_s']:,.0f} "
                                 f"tok/s | data wait {record['data_wait_pct']:.1f}%", refresh=False)
        if self.bar.disable:
            log.info("step %d/%d: loss %.4f, lr %.2e, %s tok/s, data wait %.1f%%", self.step, t.max_steps,
                     record["loss"], lr, f"{record['tokens_per_s']:,.0f}", record["data_wait_pct"])

    def run_eval(self) -> None:
        t = self.config.train
        self.eval_loss = evaluate(self.raw_model, self.eval_rows, t.batch_size, self.device, self.autocast,
                                  self.ddp, self.eval_positions)
        if self.eval_loss is not None and self.ddp.is_main:
            ppl = report.perplexity(self.eval_loss)
            record = {"step": self.step, "eval_loss": self.eval_loss, "eval_ppl": ppl}
            self.metrics.write(record)
            self.trackers.log(record)
            report.say(self.bar if self.step else None,
                       f"step {self.step}: eval loss {self.eval_loss:.4f}, perplexity {ppl:,.2f}")
            if t.plot:
                report.plot(self.output, self.config)

    def run_samples(self) -> None:
        prompts = self.config.sample.prompts
        if not self.ddp.is_main or not prompts:
            return
        texts = report.generate_samples(self.raw_model, self.encoder, self.config, self.device, self.autocast)
        for prompt, text in zip(prompts, texts):
            self.samples_log.write({"step": self.step, "prompt": prompt, "text": text})
            report.say(self.bar, f"--- sample at step {self.step} --- prompt: {prompt!r}\n{prompt}{text}")
        self.trackers.log_samples(self.step, list(zip(prompts, texts)))

    def save(self) -> None:
        """Every rank's loader and random state, gathered; rank 0 writes the checkpoint."""
        ranks = gather_objects(self.ddp, {"loader": self.loader.state_dict(), "rng": rng_state()})
        self.saved_at = self.step
        if not self.ddp.is_main:
            return
        o, t = self.config.optim, self.config.train
        save_checkpoint(self.output / CHECKPOINT_NAME, {
            "step": self.step, "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "scheduler": schedule_state(o, t.max_steps, self.step),
            "ranks": ranks, "world_size": self.ddp.world_size, "schedule_ranks": self.schedule_ranks,
            "config": config_to_dict(self.config),
            "model_config": dataclasses.asdict(self.model_config), "architecture": self.raw_model.architecture(),
            "heldout": self.heldout_id,
            "tokenizer": {"fingerprint": self.encoder.fingerprint, "vocab_size": self.encoder.vocab_size},
            "tokens": self.tokens_seen, "train_s": self.train_s_before + self.train_s,
            "elapsed_s": self.elapsed_before + time.perf_counter() - self.started})

    # -- the end ------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Evaluate, sample, checkpoint, plot; write and return the summary."""
        t = self.config.train
        finished_here = self.stopped_by is None and self.window.steps_total > 0
        if finished_here and t.eval_steps:
            self.run_eval()
        if finished_here:
            self.run_samples()
        if self.docs_log is not None:  # the documents inside the loader, which stops: the checkpoint is at that point
            self.docs_log.finish(self.step, self.loader)
        if self.saved_at != self.step:
            self.save()
        if finished_here and self.ddp.is_main and extras.export_wanted(self.config):
            out = export_model(self.raw_model, self.encoder, self.output / "hf", overwrite=True)
            report.say(None, f"Hugging Face model directory (transformers from_pretrained): {out}")
        if self.stopped_by is not None and self.ddp.is_main:
            report.say(None, f"stopped by {self.stopped_by} at step {self.step}: checkpoint written to "
                             f"{self.output / CHECKPOINT_NAME}; continue with --resume")
        summary = self.summary()
        if self.ddp.is_main:
            if summary["stream_shares"]:
                report.say(None, f"realized stream shares (rank 0): {summary['stream_shares']}")
            atomic_write_text(self.output / "summary.json", json.dumps(summary, indent=2) + "\n")
            if t.plot:
                report.plot(self.output, self.config)
        return summary

    def summary(self) -> dict[str, Any]:
        """The run in all (steps, tokens, losses) and this segment (steps, seconds, rates)."""
        t, steps_here = self.config.train, self.window.steps_total
        segment = {"steps": steps_here, "tokens": steps_here * self.tokens_per_step,
                   "train_s": round(self.train_s, 2), "wall_s": round(time.perf_counter() - self.started, 2),
                   "tokens_per_s": round(self.tokens_per_step * steps_here / self.train_s) if self.train_s else 0.0,
                   "data_wait_pct": round(100 * self.wait_s / self.train_s, 3) if self.train_s else 0.0}
        train_s_all = self.train_s_before + self.train_s
        return {
            "output_dir": str(self.output), "steps": self.step, "max_steps": t.max_steps,
            "interrupted": self.stopped_by is not None, "stopped_by": self.stopped_by,
            "tokens": self.tokens_seen, "tokens_per_step": self.tokens_per_step, "world_size": self.ddp.world_size,
            "segment": segment, "resumed_at_step": self.resumed_at,
            # this segment's figures, under the names of a run without resumes
            "tokens_per_s": segment["tokens_per_s"], "data_wait_pct": segment["data_wait_pct"],
            "train_s": segment["train_s"], "wall_s": segment["wall_s"],
            "run_train_s": round(train_s_all, 2),
            "run_tokens_per_s": round(self.tokens_seen / train_s_all) if train_s_all else 0.0,
            "final_train_loss": self.last_loss, "final_eval_loss": self.eval_loss,
            "final_eval_ppl": report.perplexity(self.eval_loss),
            "loader": {k: v for k, v in self.loader.metrics.items() if isinstance(v, (int, float))},
            "stream_shares": self.loader.metrics["stream_shares"],
            "checkpoint": str(self.output / CHECKPOINT_NAME)}

    def close(self) -> None:
        for log_file in (self.metrics, self.samples_log, self.batch_log, self.docs_log, self.trackers):
            if log_file is not None:
                log_file.close()
        self.loader.close()
        if self.loader.source is not None:
            self.loader.source.close()  # the loader does not own a source it was handed
