"""Several sources as one: streams and their weights, schedules, the document mixture."""
