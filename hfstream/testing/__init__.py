"""Helpers that stand in for remote services (the Hugging Face hub) in tests and benchmarks."""
