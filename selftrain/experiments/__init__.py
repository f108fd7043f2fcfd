"""Several runs: the plan of a compare, running them (in turn or side by side), comparing the arms."""
