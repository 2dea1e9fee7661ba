"""The objective: KD terms, hidden-state and attention terms, projections, the layer mapping."""
