"""`selftrain report`: figures and a markdown summary of the run folders of one or more experiments.

runs.py reads run folders (metrics.json and histograms.json only, so a report works on finished,
running, partial or copied runs without Ray, a model or wandb), figures.py draws, markdown.py
writes report.md. Figures are grouped per experiment, because experiments may use different
tasks (different levels, different scales).
"""

from selftrain.report.markdown import report_main, write_report

__all__ = ["report_main", "write_report"]
