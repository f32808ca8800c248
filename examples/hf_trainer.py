"""Train a transformers causal LM with ``transformers.Trainer`` on an hfstream stream (run_clm --streaming, switched).

    pip install "hfstream[hf]"
    train-streaming --config configs/tiny.yaml --max_steps 1          # or any tokenizer.json
    python examples/hf_trainer.py --tokenizer runs/tiny --config_name configs/llama-tiny \\
        --dataset_name builtin:python-docs --max_steps 200 --output_dir runs/hf-trainer

What changes from run_clm: the dataset is a ``CausalLMBlocks`` (hfstream's loader: documents
tokenized on the fly, joined with EOS, cut into ``block_size`` blocks, shuffled in a buffer),
not ``load_dataset(..., streaming=True).map(tokenize).map(group_texts)``. As with any iterable
dataset, ``max_steps`` is required and labels are the input ids (the model shifts them).
"""

from __future__ import annotations

import argparse

import transformers

from hfstream.tokens.encoder import TextEncoder
from hfstream.train.export import tokenizer_for_transformers
from hfstream.train.hf_data import CausalLMBlocks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset_name", default="builtin:python-docs", help="hub id, local files or builtin:NAME")
    p.add_argument("--dataset_config_name", default=None)
    p.add_argument("--tokenizer", required=True, help="tokenizer.json or a directory holding one")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model_name_or_path", help="a save_pretrained directory (or a hub id) to train further")
    model.add_argument("--config_name", help="a config.json (or its directory) to train from scratch")
    p.add_argument("--block_size", type=int, default=128)
    p.add_argument("--max_steps", type=int, default=200)
    p.add_argument("--per_device_train_batch_size", type=int, default=8)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--output_dir", default="runs/hf-trainer")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> transformers.Trainer:
    args = build_parser().parse_args(argv)
    tokenizer = tokenizer_for_transformers(TextEncoder(args.tokenizer))  # EOS found in the vocabulary
    if args.model_name_or_path:
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
    else:
        config = transformers.AutoConfig.from_pretrained(args.config_name)
        config.vocab_size = len(tokenizer)
        config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
        model = transformers.AutoModelForCausalLM.from_config(config)
    train_dataset = CausalLMBlocks(args.dataset_name, args.tokenizer, block_size=args.block_size,
                                   name=args.dataset_config_name, seed=args.seed, shuffle_buffer_size=1000)
    training_args = transformers.TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps,  # an iterable dataset has no length
        per_device_train_batch_size=args.per_device_train_batch_size, learning_rate=args.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=min(50, args.max_steps // 10), logging_steps=10,
        save_strategy="no", report_to="none", seed=args.seed, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=training_args, train_dataset=train_dataset,
                                   data_collator=transformers.default_data_collator,  # blocks: no padding
                                   processing_class=tokenizer)
    trainer.train()
    trainer.save_model(args.output_dir)  # model + tokenizer: from_pretrained(output_dir)
    return trainer


if __name__ == "__main__":
    main()
