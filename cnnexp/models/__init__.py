"""The model zoo. Importing this package registers every model family."""

from cnnexp.models import (
    alexnet,  # noqa: F401  (registers "alexnet", "alexnet_lite")
    densenet,  # noqa: F401  (registers "densenet")
    inception,  # noqa: F401  (registers "inception")
    inception_resnet,  # noqa: F401  (registers "inception_resnet")
    lenet,  # noqa: F401  (registers "lenet")
    mlp,  # noqa: F401  (registers "mlp")
    resnet,  # noqa: F401  (registers "resnet")
    simple_cnn,  # noqa: F401  (registers "simple_cnn")
    speednet,  # noqa: F401  (registers "speednet")
    vgg,  # noqa: F401  (registers "vgg")
    zfnet,  # noqa: F401  (registers "zfnet")
)
from cnnexp.models.registry import accepted_options, count_params, create_model, list_models, options_of, register_model

__all__ = ["accepted_options", "count_params", "create_model", "list_models", "options_of", "register_model"]
