"""Episodic meta-training, evaluation and checkpoints."""
