"""The model zoo. Importing this package registers every model family."""

from cnnexp.models import lenet  # noqa: F401  (registers "lenet")
from cnnexp.models.registry import count_params, create_model, list_models, register_model

__all__ = ["count_params", "create_model", "list_models", "register_model"]
