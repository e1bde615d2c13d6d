"""Speed measurements: `cnnexp bench` (whole models against a PyTorch reference) and
`python -m cnnexp.bench.layers` (cnnexp's reference layers against XLA's operations)."""
