"""Loading and building models: HF classifiers and causal LMs, students from the teacher, attention, capture."""
