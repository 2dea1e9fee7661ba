"""The run: build, the loop, one step, checkpoints, logs, DDP, guards, the run folder."""
