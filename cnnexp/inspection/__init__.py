"""Model inspection without training or run folders: `cnnexp summary`'s per-layer table (shapes,
parameters, MACs) and the receptive-field arithmetic behind its columns."""

from cnnexp.inspection.model_summary import (
    FORMATS,
    ModelSummary,
    render,
    show,
    summarize_model,
    summarize_module,
    summary_from_config,
    validate_summary_config,
)

__all__ = [
    "FORMATS", "ModelSummary", "render", "show", "summarize_model", "summarize_module", "summary_from_config",
    "validate_summary_config",
]
