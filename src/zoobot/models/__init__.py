"""Models: one factory over a registry of backbones, each followed by a vote head with MC dropout.

    model = create_model("efficientnet_b0", schema=DECALS_DR5, channels=3, image_size=128)
    model.eval()                              # freezes batch norm; the head's dropout stays on
    alpha = model(images_uint8, n_samples=5)  # (galaxy, sample, answer)
    rebuilt = model_from_config(model.config) # same module, fresh weights

Any timm model name works as ``architecture``; ``list_architectures()`` lists zoobot's own.
"""

from zoobot.models import zoobot2019 as _zoobot2019  # noqa: F401  (registers "zoobot-2019")
from zoobot.models.galaxy_model import GalaxyModel, create_model, model_from_config
from zoobot.models.heads import VoteHead
from zoobot.models.registry import list_architectures, register_architecture

__all__ = [
    "GalaxyModel",
    "VoteHead",
    "create_model",
    "list_architectures",
    "model_from_config",
    "register_architecture",
]
