"""One contract test over every registered architecture plus a timm model, then the details."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from zoobot.losses import vote_nll
from zoobot.models import (
    GalaxyModel,
    VoteHead,
    create_model,
    list_architectures,
    model_from_config,
    register_architecture,
)
from zoobot.models import registry
from zoobot.models.heads import ALPHA_MAX, ALPHA_MIN, RHO_EPS, always_on_dropout
from zoobot.schema import BINOMIAL, DECALS_DR5, DIRICHLET_MULTINOMIAL, SMOOTH_OR_FEATURED, Question, Schema

TIMM_ARCHITECTURE = "efficientnet_b0"  # the default; about 0.1 s forward + backward at 32 px
ARCHITECTURES = list_architectures() + [TIMM_ARCHITECTURE]
SCHEMAS = [SMOOTH_OR_FEATURED, DECALS_DR5]
IMAGE_SIZE = 32


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def images(batch=3, channels=3, size=IMAGE_SIZE, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=generator)


def build(architecture, schema=DECALS_DR5, **kwargs) -> GalaxyModel:
    return create_model(architecture, schema, image_size=IMAGE_SIZE, **kwargs)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forward_shapes_and_bounds(architecture, schema):
    model = build(architecture, schema)
    binomial = schema is SMOOTH_OR_FEATURED
    assert model.likelihood == (BINOMIAL if binomial else DIRICHLET_MULTINOMIAL)
    n_outputs = 1 if binomial else schema.n_answers
    assert model.n_outputs == n_outputs

    features = model.forward_features(images())
    assert features.shape == (3, model.n_features)
    assert model.forward_head(features).shape == (3, 1, n_outputs)
    out = model(images(), n_samples=4)  # (galaxy, sample, output)
    assert out.shape == (3, 4, n_outputs)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    if binomial:
        assert (out >= RHO_EPS).all() and (out <= 1 - RHO_EPS).all()
    else:
        assert (out >= ALPHA_MIN).all() and (out <= ALPHA_MAX).all()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_backward_reaches_backbone_and_head(architecture):
    model = build(architecture).train()
    counts = torch.randint(0, 10, (3, DECALS_DR5.n_answers))
    loss = vote_nll(model(images())[:, 0], counts, DECALS_DR5).sum()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert model.head.linear.weight.grad.abs().sum() > 0
    backbone_grad = sum(p.grad.abs().sum() for p in model.backbone.parameters())
    assert backbone_grad > 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_mc_samples_differ_in_eval_mode(architecture):
    """The MC dropout pitfall: after .eval() the head's dropout must still draw new masks."""
    model = build(architecture).eval()
    with torch.no_grad():
        features = model.forward_features(images())
        assert torch.equal(features, model.forward_features(images()))  # backbone deterministic
        samples = model(images(), n_samples=5)  # (galaxy, sample, answer)
        repeat = model(images(), n_samples=1)
    for galaxy in range(3):
        distinct = {tuple(samples[galaxy, s].tolist()) for s in range(5)}
        assert len(distinct) == 5, f"galaxy {galaxy}: MC samples are not all different in eval mode"
    assert not torch.equal(repeat[:, 0], samples[:, 0])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_backbone_runs_once_for_many_samples(architecture):
    model = build(architecture).eval()
    calls = []
    model.backbone.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    with torch.no_grad():
        out = model(images(), n_samples=15)
    assert calls == [torch.Size([3, model.n_features])]
    assert out.shape[1] == 15


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_config_round_trip(architecture):
    model = build(architecture).eval()
    config = json.loads(json.dumps(model.config))  # as a checkpoint's hyperparameters store it
    assert config == model.config
    rebuilt = model_from_config(config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    assert rebuilt.likelihood == model.likelihood and rebuilt.schema == model.schema
    with torch.no_grad():
        assert torch.equal(rebuilt.forward_features(images()), model.forward_features(images()))
    assert rebuilt.config == model.config
    config["dropout_rate"] = 0.9
    model.config["dropout_rate"] = 0.9
    assert model.config["dropout_rate"] == 0.2  # callers get a copy


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_uint8_input_equals_float_over_255(architecture):
    model = build(architecture).eval()
    x = images()
    with torch.no_grad():
        from_uint8 = model.forward_features(x)
        from_float = model.forward_features(x.float() / 255)
    assert torch.equal(from_uint8, from_float)
    assert x.dtype == torch.uint8  # the caller's array is not modified in place


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greyscale(architecture):
    model = build(architecture, SMOOTH_OR_FEATURED, channels=1)
    assert model.config["channels"] == 1
    assert model(images(channels=1), n_samples=2).shape == (3, 2, 1)
    with pytest.raises(ValueError, match=r"expected shape \(batch, 1, H, W\), got \(3, 3, 32, 32\)"):
        model(images(channels=3))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_channels_last(architecture):
    model = build(architecture).eval()
    x = images()
    with torch.no_grad():
        expected = model.forward_features(x)
        model = model.to(memory_format=torch.channels_last)
        features = model.forward_features(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)


def test_head_dropout_ignores_training_flag():
    head = VoteHead(n_features=64, n_outputs=3, dropout_rate=0.5, likelihood=DIRICHLET_MULTINOMIAL).eval()
    features = torch.rand(2, 64) + 0.1
    out = head(features, n_samples=8)  # (galaxy, sample, answer)
    assert out.shape == (2, 8, 3)
    assert (out.std(dim=1) > 0).all()
    assert head(features, n_samples=np.int64(2)).shape == (2, 2, 3)
    no_dropout = VoteHead(64, 3, dropout_rate=0.0, likelihood=DIRICHLET_MULTINOMIAL)
    still = no_dropout(features, n_samples=4)
    assert torch.equal(still[:, 0], still[:, 3])
    with pytest.raises(ValueError, match="n_samples"):
        head(features, n_samples=0)
    with pytest.raises(ValueError, match="dropout_rate"):
        VoteHead(64, 3, dropout_rate=1.0, likelihood=DIRICHLET_MULTINOMIAL)


def test_always_on_dropout_statistics_and_gradient():
    values = torch.ones(200, 50, 40, requires_grad=True)
    dropped = always_on_dropout(values, 0.2)
    zeros = (dropped == 0).float().mean().item()
    assert abs(zeros - 0.2) < 0.01
    assert torch.allclose(dropped[dropped != 0], torch.tensor(1.25))
    dropped.sum().backward()
    assert torch.equal(values.grad, dropped.detach())  # d(x * mask)/dx = mask
    assert always_on_dropout(values, 0.0) is values
    expanded = torch.ones(3, 1).expand(3, 1000)  # stride 0 over samples: still independent masks
    assert (always_on_dropout(expanded, 0.5) == 0).sum(dim=1).min() > 400


def test_binomial_rho_stays_inside_bounds_under_bf16_autocast():
    head = VoteHead(n_features=8, n_outputs=1, dropout_rate=0.2, likelihood=BINOMIAL)
    with torch.no_grad():
        head.linear.bias.fill_(50.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rho = head(torch.rand(4, 8), n_samples=3)
    assert rho.dtype == torch.float32
    assert (rho < 1).all() and (rho == 1 - RHO_EPS).all()


def test_zoobot_2019_flatten_follows_the_paper():
    model = create_model("zoobot-2019", SMOOTH_OR_FEATURED, image_size=64, pooling="flatten")
    dense = model.backbone.dense[0]
    assert dense.in_features == 128 * 4 * 4 and dense.out_features == 128
    assert model(images(size=64)).shape == (3, 1, 1)
    assert model_from_config(model.config).backbone.pooling == "flatten"
    with pytest.raises(ValueError, match="needs image_size"):
        create_model("zoobot-2019", SMOOTH_OR_FEATURED, pooling="flatten")


def test_timm_hidden_head_width_is_used():
    model = create_model("mobilenetv3_small_050", SMOOTH_OR_FEATURED)
    assert model.n_features == 1024  # head_hidden_size, not num_features (288)
    assert model(images(batch=2)).shape == (2, 1, 1)


def test_registry_and_unknown_names(monkeypatch):
    assert "zoobot-2019" in list_architectures()
    assert TIMM_ARCHITECTURE in list_architectures(include_timm=True)
    with pytest.raises(ValueError, match=r"unknown architecture 'efficientnet_b00'.*efficientnet_b0"):
        create_model("efficientnet_b00", DECALS_DR5)
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("zoobot-2019")(lambda channels, image_size: None)
    with pytest.raises(ValueError, match="timm model name"):
        register_architecture("resnet18")(lambda channels, image_size: None)

    monkeypatch.setattr(registry, "_ARCHITECTURES", dict(registry._ARCHITECTURES))

    class Tiny(nn.Module):
        def __init__(self, channels, width):
            super().__init__()
            self.conv = nn.Conv2d(channels, width, 3)
            self.num_features = width

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    @register_architecture("tiny-test")
    def tiny(channels, image_size, width=4):
        return Tiny(channels, width)

    model = create_model("tiny-test", DECALS_DR5, width=6)
    assert model.config["width"] == 6 and model.n_features == 6
    assert model_from_config(model.config).n_features == 6


def test_bad_inputs_raise_clear_errors():
    model = build("zoobot-2019")
    with pytest.raises(ValueError, match=r"built for 32x32 px, got 64x64"):
        model(images(size=64))
    with pytest.raises(TypeError, match="expected uint8 or floating point, got torch.int32"):
        model(images().int())
    with pytest.raises(ValueError, match=r"permute\(0, 3, 1, 2\)"):
        model(images().permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="channels"):
        create_model("zoobot-2019", DECALS_DR5, channels=0)
    with pytest.raises(ValueError, match="schema"):
        create_model("zoobot-2019")
    with pytest.raises(ValueError, match="num_classes"):
        create_model(TIMM_ARCHITECTURE, DECALS_DR5, num_classes=3)


def test_schema_by_name_and_custom_schemas():
    model = create_model("zoobot-2019", "decals-dr5:smooth-or-featured")
    assert model.schema.question_names == ["smooth-or-featured"] and model.n_outputs == 3
    assert model_from_config(model.config).schema == model.schema

    custom = Schema("my-tree", (Question("shape", ("round", "oval", "edge")),))
    model = create_model("zoobot-2019", custom)
    with pytest.raises(KeyError, match="pass the Schema object"):
        model_from_config(model.config)
    assert model_from_config(model.config, schema=custom).n_outputs == 3

    impostor = Schema("decals-dr5", (Question("shape", ("round", "oval")),))
    with pytest.raises(ValueError, match="another name"):
        create_model("zoobot-2019", impostor)


def test_fresh_dirichlet_head_starts_weak_and_uniform():
    """alpha near 1 for every answer: a uniform Dirichlet, on the softplus's live slope."""
    from zoobot.models.heads import INITIAL_CONCENTRATION, VoteHead

    torch.manual_seed(0)
    head = VoteHead(n_features=64, n_outputs=5, dropout_rate=0.2, likelihood="dirichlet_multinomial")
    assert head.link == "softplus"
    alpha = head(torch.randn(32, 64), n_samples=4)
    assert alpha.shape == (32, 4, 5)
    assert abs(alpha.median().item() - INITIAL_CONCENTRATION) < 0.3
    assert alpha.max().item() < 5


def _overdispersed_votes(n_galaxies=300, seed=0) -> torch.Tensor:
    """Real-looking votes of one 3-answer question: fractions vary far more than a multinomial allows."""
    rng = np.random.default_rng(seed)
    fractions = rng.dirichlet([0.8, 0.7, 0.3], size=n_galaxies)
    return torch.as_tensor(np.stack([rng.multinomial(40, f) for f in fractions]), dtype=torch.float64)


def test_softplus_link_has_slope_where_the_sigmoid_link_died():
    from zoobot.models.heads import dirichlet_link, inverse_link

    alpha = torch.tensor([0.05, 0.3, 0.8, 1.5], dtype=torch.float64)  # where fits of real votes lie
    logits = inverse_link(alpha, "dirichlet_multinomial", "softplus").requires_grad_()
    dirichlet_link(logits, "softplus").sum().backward()
    assert torch.allclose(dirichlet_link(logits.detach(), "softplus"), alpha)
    assert (logits.grad > 0.03).all()  # d alpha / d logit = 1 - exp(-(alpha - ALPHA_MIN))
    # the sigmoid link cannot go below 1; where training drove it (alpha = 1.0001) its slope is gone
    logits = inverse_link(torch.full((4,), 1.0001), "dirichlet_multinomial", "sigmoid").requires_grad_()
    dirichlet_link(logits, "sigmoid").sum().backward()
    assert (logits.grad < 2e-4).all()


@pytest.mark.parametrize("link", ["softplus", "sigmoid"])
def test_a_constant_head_reaches_the_image_blind_fit_only_with_the_softplus_link(link):
    """The dead head of docs/training.md in miniature: fit the head's bias alone to over-dispersed
    votes. The best constant has alpha < 1; the softplus link gets there, the sigmoid link cannot
    go below 1."""
    from zoobot.metrics import image_blind_nll
    from zoobot.models.heads import dirichlet_link

    schema = Schema("one", (Question("shape", ("round", "flat", "odd")),))
    counts = _overdispersed_votes()
    best = image_blind_nll(counts.numpy(), counts.numpy(), schema)["loss"]
    head = VoteHead(n_features=1, n_outputs=3, dropout_rate=0.0, likelihood="dirichlet_multinomial", link=link)
    if link == "sigmoid":
        head.set_prediction(torch.full((3,), 3.0))  # the sigmoid head's old start
    optimizer = torch.optim.Adam([head.linear.bias], lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        alpha = dirichlet_link(head.linear.bias.double(), link).expand(len(counts), 3)
        loss = vote_nll(alpha, counts, schema).mean()
        loss.backward()
        optimizer.step()
    if link == "softplus":
        assert loss.item() == pytest.approx(best, abs=1e-3)
    else:  # pinned against alpha = 1, where the rarest answer's logit runs off to -inf
        assert loss.item() > best + 0.1
        assert alpha[0, 2].item() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    ("schema", "link", "prediction"),
    [
        (SMOOTH_OR_FEATURED, "softplus", [0.73]),
        (DECALS_DR5, "softplus", None),
        (DECALS_DR5, "sigmoid", None),
    ],
)
def test_set_prediction_makes_zero_features_predict_it(schema, link, prediction):
    model = create_model("zoobot-2019", schema, head_link=link, dropout_rate=0.5)
    if prediction is None:
        low = 1.0 if link == "sigmoid" else ALPHA_MIN
        prediction = np.linspace(low + 0.05, 7.0, schema.n_answers)
    model.head.set_prediction(prediction)
    out = model.forward_head(torch.zeros(2, model.n_features), n_samples=3)
    assert out.detach().numpy() == pytest.approx(np.broadcast_to(prediction, out.shape), rel=1e-5)
    with pytest.raises(ValueError, match="expected shape"):
        model.head.set_prediction([1.0] * (model.n_outputs + 1))


def test_configs_saved_before_the_softplus_link_rebuild_the_sigmoid_head():
    model = create_model("zoobot-2019", DECALS_DR5)
    assert model.config["head_link"] == "softplus" and model.head.link == "softplus"
    old_config = {k: v for k, v in model.config.items() if k != "head_link"}  # as saved before
    assert model_from_config(old_config).head.link == "sigmoid"
    assert model_from_config(model.config).head.link == "softplus"
    with pytest.raises(ValueError, match="link: expected one of"):
        create_model("zoobot-2019", DECALS_DR5, head_link="exp")


def test_stochastic_backbone_layers_are_refused_not_silently_dropped():
    with pytest.raises(ValueError, match=r"\{'drop_path_rate': 0.1\} make the backbone stochastic"):
        create_model("efficientnet_b0", schema=SMOOTH_OR_FEATURED, drop_path_rate=0.1)
    create_model("efficientnet_b0", schema=SMOOTH_OR_FEATURED, drop_path_rate=0.0)  # explicit 0 is fine


def test_zoobot_2019_features_differ_between_galaxies_at_initialisation():
    """He initialisation: with PyTorch's default the pooled features of different images differed
    by about 2e-5 (every image-dependent gradient was tiny: the plateau of docs/training.md)."""
    spreads = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = create_model("zoobot-2019", SMOOTH_OR_FEATURED, image_size=IMAGE_SIZE)
        with torch.no_grad():
            features = model.forward_features(images(batch=16, seed=seed))  # (galaxy, feature)
        spreads.append(features.std(dim=0).mean().item())
    assert min(spreads) > 1e-3, spreads
