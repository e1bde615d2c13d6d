"""`cnnexp evaluate`: a trained run (loaded through cnnexp.training.trained_run) on its test split
and on shifted, rotated and scaled copies of it, written into the run's evaluate/ folder."""
