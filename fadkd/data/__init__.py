"""Training rows and batches: GLUE and text tasks, augmentation, unlabelled pools, collation."""
