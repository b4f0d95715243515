"""kvae's built-in encoder and decoder networks.

An encoder maps a batch of data ``(B, *data_shape)`` to features; a decoder maps latent
codes ``(B, latent_dim)`` to features. The heads (kvae.heads) turn features into
distribution parameters, so any encoder composes with any posterior and any decoder with
any likelihood. Both are constructed as ``cls(data_shape=..., **kwargs)``.
"""

from kvae.networks.conv import ConvDecoder, ConvEncoder
from kvae.networks.mlp import MLPDecoder, MLPEncoder

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]
