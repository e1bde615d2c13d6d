"""The model zoo. Importing this package registers every model family."""

from cnnexp.models import (
    alexnet,  # noqa: F401  (registers "alexnet", "alexnet_lite")
    densenet,  # noqa: F401  (registers "densenet")
    inception,  # noqa: F401  (registers "inception")
    lenet,  # noqa: F401  (registers "lenet")
    mlp,  # noqa: F401  (registers "mlp")
    resnet,  # noqa: F401  (registers "resnet")
    simple_cnn,  # noqa: F401  (registers "simple_cnn")
    speednet,  # noqa: F401  (registers "speednet")
    vgg,  # noqa: F401  (registers "vgg")
)
from cnnexp.models.registry import count_params, create_model, list_models, register_model

__all__ = ["count_params", "create_model", "list_models", "register_model"]
