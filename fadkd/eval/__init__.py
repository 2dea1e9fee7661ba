"""Dev-set evaluation: GLUE metrics and causal-LM metrics."""
