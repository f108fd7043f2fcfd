"""The round driver and what it calls: run opening, rounds, stages, checks, resume checks, prompts,
round metrics."""
