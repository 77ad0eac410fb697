"""Demo data for `make run` (the seed_demo commands): kept out of the commands so they stay short."""
