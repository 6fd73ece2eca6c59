"""Finetuning controls as Zoobot 2.x users know them: train only the last n backbone blocks, and
layer-wise learning-rate decay.

A backbone's **blocks**, from input to output: timm's own grouping (``group_matcher(coarse=False)``:
the stem, then each stage's blocks, then the last convolution for an EfficientNet) where the
model has one, else each module that holds parameters directly, in registration order (for
zoobot-2019: six convolutions, then the dense layer). The head always trains at the full rate.

    groups = parameter_groups(model, learning_rate=1e-3, weight_decay=1e-2, trainable_blocks=2, layer_decay=0.7)
    # the head at 1e-3, the last block at 7e-4, the one before at 4.9e-4; the rest frozen
"""

from __future__ import annotations

from torch import nn


def backbone_blocks(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of each block, input to output; every parameter in exactly one block."""
    matcher = getattr(backbone, "group_matcher", None)
    if callable(matcher):
        from timm.models import group_parameters

        groups = group_parameters(backbone, matcher(coarse=False))  # {block index: [names]}, sorted
        return [list(names) for _, names in sorted(groups.items())]
    blocks = []
    for prefix, module in backbone.named_modules():
        own = [f"{prefix}.{name}" if prefix else name for name, _ in module.named_parameters(recurse=False)]
        if own:
            blocks.append(own)
    return blocks


def check_finetuning(trainable_blocks: int | None, layer_decay: float, n_blocks: int) -> None:
    """ValueError unless 0 <= trainable_blocks <= n_blocks (or None: all) and 0 < layer_decay <= 1."""
    if trainable_blocks is not None and (
        isinstance(trainable_blocks, bool) or not isinstance(trainable_blocks, int) or not 0 <= trainable_blocks <= n_blocks
    ):
        raise ValueError(
            f"trainable_blocks: expected a whole number from 0 (train the head only) to {n_blocks} (this backbone's "
            f"blocks), or None for all, got {trainable_blocks!r}"
        )
    if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay: expected a number in (0, 1] (1 = the same rate everywhere), got {layer_decay!r}")


def parameter_groups(
    model: nn.Module, learning_rate: float, weight_decay: float, trainable_blocks: int | None = None, layer_decay: float = 1.0
) -> list[dict]:
    """Optimizer parameter groups for a GalaxyModel (``model.backbone``, ``model.head``).

    Blocks below the last ``trainable_blocks`` get ``requires_grad = False`` and no group; block
    d (counted from the top, the last block d = 1) trains at ``learning_rate * layer_decay**d``.
    Each group carries ``lr_scale`` (its rate over ``learning_rate``) and ``name``.
    """
    blocks = backbone_blocks(model.backbone)
    check_finetuning(trainable_blocks, layer_decay, len(blocks))
    n_trained = len(blocks) if trainable_blocks is None else trainable_blocks
    parameters = dict(model.backbone.named_parameters())
    groups = []
    for index, names in enumerate(blocks):
        depth = len(blocks) - index  # 1 for the last block
        trained = depth <= n_trained
        for name in names:
            parameters[name].requires_grad_(trained)
        if trained:
            scale = float(layer_decay) ** depth
            groups.append({"params": [parameters[n] for n in names], "lr": learning_rate * scale, "lr_scale": scale,
                           "weight_decay": weight_decay, "name": f"backbone block {index}"})
    groups.append({"params": list(model.head.parameters()), "lr": learning_rate, "lr_scale": 1.0,
                   "weight_decay": weight_decay, "name": "head"})
    return groups


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Backbone modules whose parameters are all frozen (and that have some): kept in eval mode
    while training, so batch-norm statistics of frozen blocks stay those of the pretrained model."""
    frozen = []
    for module in model.backbone.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            frozen.append(module)
    return frozen
