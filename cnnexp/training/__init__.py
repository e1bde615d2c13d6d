"""The training loop: jitted steps, optimizers, and the run that ties them to a run folder."""
