"""The model zoo. Importing this package registers every model family."""

from cnnexp.models import lenet  # noqa: F401  (registers "lenet")
from cnnexp.models import resnet  # noqa: F401  (registers "resnet")
from cnnexp.models import densenet  # noqa: F401  (registers "densenet")
from cnnexp.models import simple_cnn  # noqa: F401  (registers "simple_cnn")
from cnnexp.models import alexnet  # noqa: F401  (registers "alexnet", "alexnet_lite")
from cnnexp.models import vgg  # noqa: F401  (registers "vgg")
from cnnexp.models import inception  # noqa: F401  (registers "inception")
from cnnexp.models.registry import count_params, create_model, list_models, register_model

__all__ = ["count_params", "create_model", "list_models", "register_model"]
