"""hfstream for ``transformers.Trainer``: run_clm's grouped blocks (``input_ids``/``labels``) streamed from any source.

``run_clm.py --streaming`` maps a tokenizer over a streamed dataset and ``group_texts`` it into
blocks of ``block_size`` tokens; :class:`CausalLMBlocks` is that dataset, from hfstream's
loader: documents joined with EOS and cut into blocks with no padding (the loader's rows, each
``block_size`` tokens), shuffled in a seeded buffer, held out or mixed as the loader allows::

    train_dataset = CausalLMBlocks("HuggingFaceFW/fineweb", "tok/", block_size=1024, name="sample-10BT")
    trainer = Trainer(model=model, args=TrainingArguments(max_steps=10_000, ...), train_dataset=train_dataset)

An ``IterableDataset`` has no length: ``TrainingArguments.max_steps`` is required (the stream
repeats forever by default: ``epochs=None``). ``labels`` are the ``input_ids``: transformers
causal LMs shift them inside. With ``dataloader_num_workers=N`` each DataLoader worker streams
its own disjoint shard (a dataset name or path is needed then); under DDP, accelerate hands
each rank its batches from rank 0's stream (its default for iterable datasets). Resuming a
Trainer checkpoint replays the stream up to the step reached (the order is deterministic for
a seed), rather than restoring the loader's state.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from hfstream.loader.loader import StreamingTextDataLoader


class CausalLMBlocks(IterableDataset):
    """``{"input_ids": (block_size,), "labels": (block_size,)}`` int64 items from a text stream.

    Args:
        source: what ``StreamingTextDataLoader`` takes (a dataset name/path, a mixture, texts).
        tokenizer: a ``tokenizer.json``, its directory (a transformers model directory works) or
            a ``tokenizers.Tokenizer``.
        block_size: tokens per item (run_clm's ``--block_size``).
        shuffle_buffer_size, seed: the loader's shuffle buffer (each DataLoader worker: ``seed + worker``).
        rows_per_read: rows the loader packs at a time (its batch size).
        **options: more ``StreamingTextDataLoader`` / corpus options (``name``, ``split``,
            ``epochs``, ``text_column``, ...); ``epochs`` defaults to None (forever).
    """

    def __init__(self, source: Any, tokenizer: Any, block_size: int, *, shuffle_buffer_size: int = 10_000,
                 seed: int = 0, rows_per_read: int = 16, **options: Any):
        super().__init__()
        self.source, self.tokenizer, self.block_size = source, tokenizer, block_size
        self.shuffle_buffer_size, self.seed, self.rows_per_read = shuffle_buffer_size, seed, rows_per_read
        self.options = {"epochs": None, **options} if isinstance(source, str) else options

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard = {"shard": worker, "num_shards": num_workers} if num_workers > 1 else {}
        # rows of block_size tokens: the loader's (B, T) inputs plus the last target, T = block_size - 1
        with StreamingTextDataLoader(self.source, self.tokenizer, self.rows_per_read, self.block_size - 1,
                                     self.shuffle_buffer_size, seed=self.seed + worker,
                                     **self.options, **shard) as loader:
            for batch in loader:
                rows = torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1)  # (B, T) + (B, 1) -> (B, T+1)
                for row in rows:
                    yield {"input_ids": row, "labels": row.clone()}
