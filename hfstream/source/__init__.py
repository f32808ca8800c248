"""One dataset's documents: the spec, its resolution, the worker wire and process, the corpus."""
