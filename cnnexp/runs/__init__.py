"""Run folders: their layout (every file name, in layout), names and resolvers (naming), summary.json
(summary), metrics, checkpoints, and the fingerprint that says two runs have the same config."""
