"""kvae-resnet against kvae's component contracts (kvae.testing), the way a plugin
author tests a plugin: one call per component, through the names its entry points declare."""

import numpy as np
import pytest

import kvae
from kvae import registry, testing
from kvae.errors import ConfigError

# Small networks keep the XLA compilations of the contract checks quick on a CPU.
SMALL_ENCODER = {"filters": [8, 16], "blocks": 1, "dense": 16}
SMALL_DECODER = {"filters": [16, 8], "blocks": 1}


def test_entry_points_are_registered():
    assert "resnet" in registry.names("encoders")
    assert "resnet" in registry.names("decoders")
    assert registry.provider("encoders", "resnet")[0] == "kvae-resnet"
    assert registry.get("encoders", "resnet").__name__ == "ResNetEncoder"


def test_encoder_contract():
    testing.check_encoder(
        "resnet",
        data_shape=(32, 32, 3),
        kwargs=SMALL_ENCODER,
        likelihood="discretized-logistic",
    )


def test_decoder_contract():
    testing.check_decoder(
        "resnet",
        data_shape=(32, 32, 3),
        kwargs=SMALL_DECODER,
        likelihoods=("discretized-logistic", "bernoulli"),
    )


def test_decoder_gives_a_per_pixel_feature_map():
    decoder = registry.get("decoders", "resnet")(data_shape=(64, 48, 3), **SMALL_DECODER)
    out = decoder(np.zeros((2, 5), "float32"))
    assert tuple(out.shape) == (2, 64, 48, 8)


@pytest.mark.parametrize("group", ["encoders", "decoders"])
@pytest.mark.parametrize(
    ("data_shape", "expected"),
    [((30, 32, 3), "divisible by 4"), ((784,), "image shape"), ((32, 32), "image shape")],
)
def test_bad_shapes_are_refused_clearly(group, data_shape, expected):
    with pytest.raises(ConfigError, match=expected):
        registry.get(group, "resnet")(data_shape=data_shape)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ConfigError, match="filters"):
        registry.get("encoders", "resnet")(data_shape=(32, 32, 3), filters=[])
    with pytest.raises(ConfigError, match="blocks"):
        registry.get("decoders", "resnet")(data_shape=(32, 32, 3), blocks=-1)
    with pytest.raises(ConfigError, match="activation"):
        registry.get("decoders", "resnet")(data_shape=(32, 32, 3), activation="nope")


def test_vae_with_resnet_networks_samples_colour_images():
    model = kvae.VAE(
        encoder="resnet",
        decoder="resnet",
        likelihood="discretized-logistic",
        data_shape=(32, 32, 3),
        latent_dim=4,
        encoder_kwargs=SMALL_ENCODER,
        decoder_kwargs=SMALL_DECODER,
    )
    images = model.sample(3, seed=0)
    assert images.shape == (3, 32, 32, 3)
    assert np.all((images >= 0) & (images < 1))
    assert model.get_config()["providers"]["encoder"][0] == "kvae-resnet"
