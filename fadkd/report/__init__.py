"""After the run: summaries, results tables, the paper's table, plots."""
