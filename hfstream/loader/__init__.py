"""Token batches for training: tokenize, shuffle, pack, and the producers that run it."""
