"""Text to token ids: the encoder and its backends, tokenizer threads, tokenizer training."""
