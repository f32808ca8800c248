"""train-streaming's machinery: config, model, the loop, its data plan, reports and checkpoints."""
