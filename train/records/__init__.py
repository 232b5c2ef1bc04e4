"""What a run writes: checkpoints to continue from, logs and plots for people, the model card."""
