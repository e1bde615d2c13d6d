"""Looking inside models: `cnnexp summary`'s per-layer table (shapes, parameters, receptive fields)."""

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
