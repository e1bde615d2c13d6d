"""The zoo's architectures written again in PyTorch, for `cnnexp bench`'s side-by-side reference.

Each builder mirrors a cnnexp model layer for layer, so both sides do the same arithmetic and
hold the same parameters (tests check the counts, and the forward outputs given the same
weights). Models take NCHW float32 images and return logits. PyTorch is the optional `bench`
extra: importing this package without it raises ImportError, which `cnnexp bench` reports.
"""

from cnnexp.bench.torch_models import branched, plain  # noqa: F401  (register the builders)
from cnnexp.bench.torch_models.registry import UnsupportedReference, reference_model, reference_names

__all__ = ["UnsupportedReference", "reference_model", "reference_names"]
