"""Training: the train-config checks of its own groups (options), the one builder from config to model,
optimizer, state and steps (builder), the jitted steps, losses, optimizers and schedules, data
parallelism, fine-tuning (init_from), the loop that ties them to a run folder (run), the
learning-rate range test of `cnnexp lr-find` (lr_range), and a trained run loaded back for
analysis (trained_run)."""
