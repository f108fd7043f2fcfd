"""The round driver and what it calls: run opening, rounds, stages, checks, prompts, round metrics."""
