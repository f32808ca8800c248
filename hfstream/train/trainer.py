"""The training loop behind ``train-streaming``: a stream of documents into a GPT, one device or DDP.

It reads top to bottom like nanoGPT's ``train.py``: distributed setup and device -> output
directory and checkpoint -> the held-out slice -> the tokenizer (trained from the stream when
none is given) -> model and optimizer -> this rank's loader -> the loop (log, evaluate, sample,
save) -> the final checkpoint, curve and summary.

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
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hfstream.train.checkpoint import CHECKPOINT_NAME, find_checkpoint, load_checkpoint, save_checkpoint
from hfstream.train.config import Config, OptimConfig, config_to_dict, config_to_yaml
from hfstream.train.distributed import Ranks, agree, broadcast_object, gather_objects, init_distributed
from hfstream.errors import ConfigError, EmptyDatasetError, StateError
from hfstream.source.heldout import ExcludingSource, heldout_fingerprint, pack_rows, read_head
from hfstream.train.model import GPT
from hfstream.rundir import MetricsLog, atomic_write_text, ensure_writable_dir, read_metrics

log = logging.getLogger("hfstream.train")

SOURCE_KEYS = ("split", "name", "data_files", "revision", "text_column", "min_length", "shard_by",
               "sample_by", "encoding_errors", "format", "reader", "strict")


def train(config: Config, *, resume: str | os.PathLike[str] | bool | None = None,
          overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a GPT as ``config`` says; return the summary (also written to ``summary.json``).

    Args:
        resume: continue from a checkpoint: True for ``OUTPUT/checkpoint.pt``, or a path.
        overwrite: start afresh even if the output directory holds a checkpoint.
        progress: show a progress bar on rank 0 (else a log line per ``logging_steps``).

    Raises:
        ConfigError, StateError, ...: bad configuration, a missing, corrupt or mismatched
            checkpoint, an output directory that cannot be written -- all checked before
            training starts; checkpoints and logs are written atomically, and a new run that
            fails before writing anything removes the directory it created.
    """
    d, t, o, s = config.data, config.train, config.optim, config.sample
    rank_info = init_distributed(t.device)
    output = Path(t.output_dir).expanduser()
    created = not output.exists()
    try:
        return _train(config, d, t, o, s, rank_info, resume, overwrite, progress)
    except BaseException:
        if created and rank_info.is_main:  # a run that failed before writing anything leaves no trace
            with contextlib.suppress(OSError):
                output.rmdir()
        raise
    finally:
        if rank_info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: Config, d: Any, t: Any, o: OptimConfig, s: Any, ddp: Ranks, resume: Any,
           overwrite: bool, progress: bool) -> dict[str, Any]:
    started = time.perf_counter()
    device = choose_device(t.device, ddp)
    dtype = choose_dtype(t.dtype, device)
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # -- output directory and checkpoint: everything is checked before anything is written --
    output = Path(t.output_dir).expanduser()
    ckpt = None
    if resume:
        ckpt_path = find_checkpoint(resume, output)
        ckpt = load_checkpoint(ckpt_path)
    elif (output / CHECKPOINT_NAME).exists() and not overwrite:
        raise ConfigError(f"{str(output)!r} already holds a run (checkpoint.pt)",
                          "pass --resume to continue it, --overwrite to start over in it, or "
                          "choose another --output")
    if ddp.is_main:
        ensure_writable_dir(output)
    if ckpt is not None and ckpt["world_size"] != ddp.world_size:
        raise StateError(f"the checkpoint was written by {ckpt['world_size']} rank(s), this run has "
                         f"{ddp.world_size}", "resume with the same torchrun --nproc_per_node "
                         "(and nodes): each rank continues its own shard of the stream")

    # -- the held-out slice: the head of the stream, never trained on -------------------------
    heldout = broadcast_object(ddp, read_heldout(config) if ddp.is_main else None)
    if d.eval_docs and len(heldout) < d.eval_docs:
        raise EmptyDatasetError(
            f"{d.dataset!r} has only {len(heldout)} documents, all held out (data.eval_docs="
            f"{d.eval_docs}): nothing would be left to train on", "lower data.eval_docs")
    heldout_id = heldout_fingerprint(heldout)
    if ckpt is not None and ckpt["heldout"] != heldout_id:
        raise StateError("the held-out documents differ from the checkpoint's (the dataset or "
                         "data.eval_docs changed)", "resume with the same data section")

    # -- tokenizer: given, kept from the run being resumed, or trained from the stream now ----
    encoder = prepare_tokenizer(config, ddp, output, heldout, resuming=ckpt is not None)
    if ckpt is not None and ckpt["tokenizer"]["fingerprint"] != encoder.fingerprint:
        theirs = ckpt["tokenizer"]
        raise StateError(
            f"the tokenizer does not match the checkpoint: it was trained with tokenizer "
            f"{theirs['fingerprint']} ({theirs['vocab_size']:,} tokens), this run uses "
            f"{encoder.fingerprint} ({encoder.vocab_size:,} tokens)",
            f"resume with the run's own tokenizer ({output / 'tokenizer.json'}), or start a new run")

    # -- model and optimizer ---------------------------------------------------------------
    vocab_size = config.model.vocab_size or 64 * math.ceil(encoder.vocab_size / 64)
    if vocab_size < encoder.vocab_size:
        raise ConfigError(f"model.vocab_size={vocab_size} is smaller than the tokenizer's "
                          f"{encoder.vocab_size}", "leave model.vocab_size null to take the tokenizer's")
    model_config = dataclasses.replace(config.model, vocab_size=vocab_size)
    if ckpt is not None and ckpt["model_config"] != dataclasses.asdict(model_config):
        diff = {k: (v, getattr(model_config, k)) for k, v in ckpt["model_config"].items()
                if getattr(model_config, k) != v}
        raise StateError("the model section differs from the checkpoint's: " + ", ".join(
            f"{k}: saved {a}, now {b}" for k, (a, b) in diff.items()),
            "resume with the checkpoint's model settings (its config.yaml)")
    torch.manual_seed(t.seed)                      # the same initial weights on every rank
    raw_model = GPT(model_config).to(device)
    optimizer = raw_model.configure_optimizer(o.learning_rate, o.weight_decay, (o.beta1, o.beta2),
                                              o.eps, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = 0
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        step = ckpt["step"]
    torch.manual_seed(t.seed + 1 + ddp.rank)       # dropout differs across ranks
    if ckpt is not None:
        restore_rng(ckpt["ranks"][ddp.rank])
    model: torch.nn.Module = torch.compile(raw_model) if t.compile else raw_model
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[ddp.local_rank] if device.type == "cuda" else None)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())

    # -- data: this rank's shard of an endless stream, minus the held-out documents ----------
    loader = make_loader(config, ddp, encoder, heldout, device)
    eval_rows = pack_rows(encoder.encode_batch(heldout), encoder.eos_id, model_config.seq_len,
                          max_rows=t.eval_batches * t.batch_size)[ddp.rank::ddp.world_size]
    try:
        if ckpt is not None:
            loader.load_state_dict(ckpt["ranks"][ddp.rank]["loader"])
        loader.start()  # batches are prepared while the run sets up and evaluates step 0
        tokens_per_step = t.batch_size * model_config.seq_len * t.gradient_accumulation_steps * ddp.world_size
        run_info = describe_run(config, ddp, model_config, raw_model, encoder, tokens_per_step,
                                len(heldout), device, dtype)
        metrics = samples_log = batch_log = None
        if ddp.is_main:
            atomic_write_text(output / "config.yaml", config_to_yaml(config))
            atomic_write_text(output / "run_info.json", json.dumps(run_info, indent=2) + "\n")
            metrics = MetricsLog(output / "metrics.jsonl", resume_step=step if ckpt else None)
            samples_log = MetricsLog(output / "samples.jsonl", resume_step=step if ckpt else None)
            for line in run_info["lines"]:
                log.info(line)
        if t.record_batches:
            batch_log = MetricsLog(output / f"batches-rank{ddp.rank}.jsonl",
                                   resume_step=step if ckpt else None)
        elapsed_before = ckpt["elapsed_s"] if ckpt else 0.0
        tokens_seen = ckpt["tokens"] if ckpt else 0
        del ckpt  # free the memory-mapped tensors

        def save(at_step: int) -> None:
            rank_state = {"loader": loader.state_dict(), "rng": rng_state()}
            ranks = gather_objects(ddp, rank_state)
            if ddp.is_main:
                save_checkpoint(output / CHECKPOINT_NAME, {
                    "step": at_step, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "scheduler": schedule_state(o, t.max_steps, at_step),
                    "ranks": ranks, "world_size": ddp.world_size, "config": config_to_dict(config),
                    "model_config": dataclasses.asdict(model_config), "heldout": heldout_id,
                    "tokenizer": {"fingerprint": encoder.fingerprint, "vocab_size": encoder.vocab_size},
                    "tokens": tokens_seen, "elapsed_s": elapsed_before + time.perf_counter() - started})

        def run_eval(at_step: int) -> float | None:
            loss = evaluate(raw_model, eval_rows, t.batch_size, device, autocast, ddp)
            if loss is not None and ddp.is_main:
                metrics.write({"step": at_step, "eval_loss": loss, "eval_ppl": math.exp(min(loss, 50))})
                say(bar, f"step {at_step}: eval loss {loss:.4f}, perplexity {math.exp(min(loss, 50)):,.2f}")
                if t.plot:
                    plot(output, config)
            return loss

        def run_samples(at_step: int) -> None:
            if not ddp.is_main or not s.prompts:
                return
            texts = generate_samples(raw_model, encoder, config, device, autocast)
            for prompt, text in zip(s.prompts, texts):
                samples_log.write({"step": at_step, "prompt": prompt, "text": text})
                say(bar, f"--- sample at step {at_step} ---\n{prompt}{text}")

        # -- the loop ---------------------------------------------------------------------
        from hfstream.progress import progress_bar

        bar = progress_bar(total=t.max_steps, initial=step, unit="step", dynamic_ncols=True,
                           disable=not (progress and ddp.is_main), desc="train", smoothing=0.05)
        batches = iter(loader)
        window = Window()
        train_s = wait_s = 0.0
        last_loss = eval_loss = None
        stopped_by: str | None = None
        saved_at = step if resume else -1
        if step == 0 and t.eval_steps:
            eval_loss = run_eval(0)
        model.train()
        with GracefulStop() as stop:
            while step < t.max_steps:
                t0 = time.perf_counter()
                lr = learning_rate(step, o, t.max_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                micro = [b for _, b in zip(range(t.gradient_accumulation_steps), batches)]
                waited = time.perf_counter() - t0
                interrupted, exhausted = agree(ddp, device, stop.signal is not None,
                                               len(micro) < t.gradient_accumulation_steps)
                if exhausted:
                    say(bar, f"the data stream ended after {step} steps (data.max_samples / "
                             "data.epochs): stopping on every rank")
                    break
                loss_sum = torch.zeros((), device=device)
                for i, (inputs, targets) in enumerate(micro):
                    if batch_log is not None:
                        batch_log.write(batch_record(step + 1, i, inputs, targets))
                    inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                    last = i == len(micro) - 1
                    sync = contextlib.nullcontext() if last or not ddp.enabled else model.no_sync()
                    with sync:
                        with autocast:
                            _, loss = model(inputs, targets)
                        loss = loss / len(micro)
                        scaler.scale(loss).backward()
                    loss_sum += loss.detach()
                if o.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), o.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens_seen += tokens_per_step
                window.add(loss_sum, time.perf_counter() - t0, waited, tokens_per_step)
                train_s += time.perf_counter() - t0
                wait_s += waited
                bar.update(1)

                if step % t.logging_steps == 0 or step == t.max_steps or interrupted:
                    record = window.flush(ddp, device, step, lr, tokens_seen)
                    last_loss = record["loss"]
                    shares = stream_shares(loader)
                    if shares is not None:
                        record["stream_shares"] = shares  # this rank's realized mix
                    if ddp.is_main:
                        metrics.write(record)
                        bar.set_postfix_str(f"loss {record['loss']:.3f} | {record['tokens_per_s']:,.0f} tok/s "
                                            f"| data wait {record['data_wait_pct']:.1f}%", refresh=False)
                        if bar.disable:
                            log.info("step %d/%d: loss %.4f, lr %.2e, %s tok/s, data wait %.1f%%", step,
                                     t.max_steps, record["loss"], lr, f"{record['tokens_per_s']:,.0f}",
                                     record["data_wait_pct"])
                if interrupted:
                    stopped_by = "signal"
                    break
                if t.eval_steps and step % t.eval_steps == 0 and step < t.max_steps:
                    eval_loss = run_eval(step)
                if s.sample_steps and step % s.sample_steps == 0 and step < t.max_steps:
                    run_samples(step)
                if t.save_steps and step % t.save_steps == 0 and step < t.max_steps:
                    save(step)
                    saved_at = step
        bar.close()
        if window.losses:  # steps since the last log line (the stream ended early)
            record = window.flush(ddp, device, step, lr, tokens_seen)
            last_loss = record["loss"]
            if ddp.is_main:
                metrics.write(record)

        # -- the end: evaluate, sample, checkpoint, plot, summary -----------------------------
        finished_here = stopped_by is None and window.steps_total > 0  # not a no-op resume
        if finished_here and t.eval_steps:
            eval_loss = run_eval(step)
        if finished_here:
            run_samples(step)
        if saved_at != step:
            save(step)
        if stopped_by is not None and ddp.is_main:
            say(None, f"stopped by a signal at step {step}: checkpoint written to "
                      f"{output / CHECKPOINT_NAME}; continue with --resume")
        summary = {
            "output_dir": str(output), "steps": step, "max_steps": t.max_steps,
            "interrupted": stopped_by is not None, "tokens": tokens_seen,
            "tokens_per_step": tokens_per_step, "world_size": ddp.world_size,
            "tokens_per_s": round(tokens_per_step * window.steps_total / train_s) if train_s else 0.0,
            "data_wait_pct": round(100 * wait_s / train_s, 3) if train_s else 0.0,
            "train_s": round(train_s, 2), "wall_s": round(time.perf_counter() - started, 2),
            "final_train_loss": last_loss, "final_eval_loss": eval_loss,
            "final_eval_ppl": math.exp(min(eval_loss, 50)) if eval_loss is not None else None,
            "loader": {k: v for k, v in loader.metrics.items() if isinstance(v, (int, float))},
            "stream_shares": stream_shares(loader),
            "checkpoint": str(output / CHECKPOINT_NAME)}
        if ddp.is_main and summary["stream_shares"]:
            say(None, f"realized stream shares (rank 0): {summary['stream_shares']}")
        if ddp.is_main:
            atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
            if t.plot:
                plot(output, config)
            metrics.close()
            samples_log.close()
        if batch_log is not None:
            batch_log.close()
        return summary
    finally:
        loader.close()
        loader.source.close()  # the loader does not own a source it was handed: stop its worker


# -- setup helpers ---------------------------------------------------------------------------

def choose_device(pref: str, ddp: Ranks) -> torch.device:
    """``auto``: CUDA (this rank's GPU), else Apple MPS, else the CPU."""
    if pref == "auto":
        if torch.cuda.is_available():
            pref = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            pref = "mps"
        else:
            pref = "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available",
                              "use train.device=auto (or cpu)")
        return torch.device("cuda", ddp.local_rank)
    if pref == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device=mps but MPS is not available", "use train.device=auto (or cpu)")
    return torch.device(pref)


def choose_dtype(pref: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 autocast on CUDA GPUs that support it, float32 elsewhere."""
    if pref == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if pref != "float32" and device.type == "cpu":
        log.warning("train.dtype=%s on the CPU: autocast there is slow; float32 is usual", pref)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[pref]


def corpus_options(config: Config) -> dict[str, Any]:
    """The SourceSpec options of the data section (everything but shard, limits and epochs)."""
    seed = config.train.seed if config.data.shuffle_files else None
    return {k: getattr(config.data, k) for k in SOURCE_KEYS} | {"seed": seed}


def read_heldout(config: Config) -> list[str]:
    """The first ``data.eval_docs`` documents of the whole stream (shard 0 of 1, epoch 0)."""
    from hfstream.source.corpus import HuggingFaceStreamingCorpus

    d = config.data
    if not d.eval_docs:
        return []
    if d.streams:  # a mixture: the head of each stream, eval_docs split evenly between them
        from hfstream.mixing.streams import sorted_streams

        streams = sorted_streams(d.streams)
        per_stream = -(-d.eval_docs // len(streams))
        heads: list[str] = []
        for stream in streams:
            source = stream.open(max_samples=per_stream, epochs=1)
            try:
                heads += read_head(source, per_stream)
            finally:
                source.close()
        return heads
    with HuggingFaceStreamingCorpus(d.dataset, batch_size=min(d.fetch_batch_size, d.eval_docs),
                                    max_samples=d.eval_docs, **corpus_options(config)) as corpus:
        return read_head(corpus, d.eval_docs)


def prepare_tokenizer(config: Config, ddp: Ranks, output: Path, heldout: list[str], resuming: bool):
    """The run's TextEncoder: ``tokenizer.path``, else the run's own, else one trained now.

    A trained tokenizer never sees the held-out documents and is saved as OUTPUT/tokenizer.json;
    rank 0 trains it and sends it to the other ranks.
    """
    from hfstream.tokens.encoder import TextEncoder
    from hfstream.tokens.tokenizer_trainer import save_tokenizer, tokenizer_from_json

    tc = config.tokenizer
    own = output / "tokenizer.json"
    if tc.path is not None:
        source: Any = tc.path
        if ddp.is_main and not resuming:
            encoder = TextEncoder(source, backend=tc.backend)
            save_tokenizer(encoder.tokenizer, output)  # the run directory is self-contained
            return encoder
    elif resuming:
        if not own.is_file():
            raise ConfigError(f"the run being resumed has no tokenizer at {str(own)!r}",
                              "pass the tokenizer it was trained with: --tokenizer PATH")
        source = own
    else:
        text = train_tokenizer_now(config, output, heldout) if ddp.is_main else None
        source = tokenizer_from_json(broadcast_object(ddp, text))
    return TextEncoder(source, backend=tc.backend)


def train_tokenizer_now(config: Config, output: Path, heldout: list[str]) -> str:
    """Train the run's tokenizer from the stream (rank 0); returns its JSON."""
    from hfstream.source.heldout import text_id
    from hfstream.tokens.tokenizer_trainer import save_tokenizer, train_from_corpus

    tc, d = config.tokenizer, config.data
    held = {text_id(x) for x in heldout}
    log.info("no tokenizer given: training a %d-token byte-level BPE on %d documents of %s",
             tc.vocab_size, tc.max_samples, d.dataset)
    with tokenizer_source(config, len(heldout)) as corpus:  # one pass at most
        tokenizer, report = train_from_corpus(
            corpus, tc.max_samples, tc.vocab_size, min_frequency=tc.min_frequency,
            special_tokens=tc.special_tokens, holdout=heldout, dataset=d.dataset,
            skip=(lambda x: text_id(x) in held) if held else None,
            progress=sys.stderr.isatty())
    save_tokenizer(tokenizer, output, report)
    log.info("%s", report.summary())
    return tokenizer.to_str()


def tokenizer_source(config: Config, num_heldout: int) -> Any:
    """The documents a tokenizer is trained on: the dataset, or the mixture mixed by documents
    (relative weights kept, absolute ones made equal, ``tokenizer.max_samples`` per epoch)."""
    from hfstream.source.corpus import HuggingFaceStreamingCorpus
    from hfstream.mixing.streams import MixedSource

    d = config.data
    if not d.streams:
        return HuggingFaceStreamingCorpus(d.dataset, batch_size=d.fetch_batch_size, **corpus_options(config))
    streams = []
    for raw in d.streams:
        stream = {k: v for k, v in raw.items() if k not in ("proportion", "repeat", "choose", "size")}
        stream["proportion"] = raw.get("proportion") or 1.0
        streams.append(stream)
    return MixedSource(streams, epoch_size=config.tokenizer.max_samples + num_heldout, seed=config.train.seed)


def make_loader(config: Config, ddp: Ranks, encoder: Any, heldout: list[str], device: torch.device):
    """This rank's StreamingTextDataLoader over shard ``rank`` of ``world_size``, held-out docs excluded."""
    from hfstream.source.corpus import HuggingFaceStreamingCorpus
    from hfstream.loader.loader import StreamingTextDataLoader

    d, t = config.data, config.train
    if d.streams and d.mix_by == "tokens":  # one pipeline per stream; every row from one stream
        return StreamingTextDataLoader(
            d.streams, encoder, t.batch_size, config.model.seq_len, d.shuffle_buffer_size, seed=t.seed,
            prefetch=d.prefetch, pin_memory=device.type == "cuda", mix_by="tokens", epoch_size=d.epoch_size,
            batching_method=d.batching_method, shard=ddp.rank, num_shards=ddp.world_size, epochs=d.epochs,
            wrap_source=lambda source: ExcludingSource(source, heldout))
    if d.streams:
        from hfstream.mixing.streams import MixedSource

        corpus: Any = MixedSource(d.streams, epoch_size=d.epoch_size, seed=t.seed, rank=ddp.rank,
                                  world_size=ddp.world_size, epochs=d.epochs)
    else:
        corpus = HuggingFaceStreamingCorpus(d.dataset, batch_size=d.fetch_batch_size,
                                            max_samples=d.max_samples, epochs=d.epochs,
                                            shard=ddp.rank, num_shards=ddp.world_size,
                                            **corpus_options(config))
    source = ExcludingSource(corpus, heldout)
    try:
        return StreamingTextDataLoader(source, encoder, t.batch_size, config.model.seq_len,
                                       d.shuffle_buffer_size, seed=t.seed + ddp.rank,
                                       prefetch=d.prefetch, pin_memory=device.type == "cuda")
    except BaseException:
        corpus.close()
        raise


def stream_shares(loader: Any) -> dict[str, float] | None:
    """Realized per-stream shares of a mixture (rows with mix_by=tokens, documents otherwise)."""
    source = loader.source
    if hasattr(source, "shares"):
        return source.shares()
    inner = getattr(source, "corpus", None)
    if inner is not None and hasattr(inner, "proportions"):
        return {label: round(share, 4) for label, share in inner.proportions().items()}
    return None


def describe_run(config, ddp, model_config, model, encoder, tokens_per_step, num_heldout,
                 device, dtype) -> dict[str, Any]:
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
        f"model: {model.num_params() / 1e6:,.2f}M parameters ({model_config.n_layer} layers, "
        f"{model_config.n_head} heads, {model_config.n_embd} wide, vocab {model_config.vocab_size:,}) "
        f"on {device} in {info['dtype']}",
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


# -- the loop's helpers -----------------------------------------------------------------------

def learning_rate(step: int, o: OptimConfig, max_steps: int) -> float:
    """Linear warmup to ``learning_rate``, then cosine decay to ``learning_rate * min_lr_ratio``."""
    decay_steps = o.decay_steps or max_steps
    min_lr = o.learning_rate * o.min_lr_ratio
    if step < o.warmup_steps:
        return o.learning_rate * (step + 1) / o.warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - o.warmup_steps) / max(decay_steps - o.warmup_steps, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o.learning_rate - min_lr)


def schedule_state(o: OptimConfig, max_steps: int, step: int) -> dict[str, Any]:
    """The scheduler's state: a pure function of the step, so these fields are all of it."""
    return {"kind": "warmup_cosine", "step": step, "learning_rate": o.learning_rate,
            "warmup_steps": o.warmup_steps, "decay_steps": o.decay_steps or max_steps,
            "min_lr_ratio": o.min_lr_ratio}


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
def evaluate(model: GPT, rows: np.ndarray, batch_size: int, device: torch.device, autocast: Any,
             ddp: Ranks) -> float | None:
    """Mean loss per token over the held-out rows (each rank takes its share)."""
    if len(rows) == 0 and not ddp.enabled:
        return None
    total = torch.zeros(2, dtype=torch.float64)  # (sum of token losses, tokens)
    model.eval()
    for i in range(0, len(rows), batch_size):
        chunk = torch.from_numpy(rows[i:i + batch_size]).to(device)
        with autocast:
            _, loss = model(chunk[:, :-1], chunk[:, 1:])  # (b, T+1) -> inputs, targets (b, T)
        total[0] += loss.item() * chunk[:, 1:].numel()
        total[1] += chunk[:, 1:].numel()
    model.train()
    if ddp.enabled:
        if ddp.backend == "nccl":
            total = total.to(device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total[0] / total[1]) if total[1] > 0 else None


@torch.no_grad()
def generate_samples(model: GPT, encoder: Any, config: Config, device: torch.device,
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


def batch_record(step: int, micro: int, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """What ``train.record_batches`` writes per micro-batch: a hash and the packed rows.

    ``rows`` (B, T+1) are the inputs plus the last target: the exact token stream trained on.
    """
    import hashlib

    digest = hashlib.sha1(inputs.numpy().tobytes() + targets.numpy().tobytes()).hexdigest()
    rows = torch.cat([inputs, targets[:, -1:]], dim=1)  # (B, T) + (B, 1) -> (B, T+1)
    return {"step": step, "micro": micro, "sha1": digest, "rows": rows.tolist()}


def rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(rank_state: dict[str, Any]) -> None:
    rng = rank_state["rng"]
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def plot(output: Path, config: Config) -> None:
    from hfstream.train.plotting import plot_training_curve

    m = config.model
    title = f"{config.data.dataset}: {m.n_layer} layers x {m.n_embd} (seq {m.seq_len})"
    plot_training_curve(read_metrics(output / "metrics.jsonl"), output / "training_curve.png", title)


def say(bar: Any, message: str) -> None:
    """A line for the person watching: above the progress bar, or through logging."""
    if bar is not None and not bar.disable:
        bar.write(message, file=sys.stderr)
    else:
        log.info("%s", message)


class GracefulStop:
    """SIGINT / SIGTERM ask the loop to finish the current step, checkpoint and exit.

    A second Ctrl+C aborts at once (checkpoints are written atomically, so nothing is left
    half-written) -- except under torchrun, whose agent forwards the signal a second time and
    kills stragglers itself after 30 s.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT and not self._under_torchrun:
                raise KeyboardInterrupt
            return
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then writing a checkpoint "
              "(Ctrl+C again to abort without one)", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
