"""Several runs: the plan of a compare and running it (in turn or side by side)."""
