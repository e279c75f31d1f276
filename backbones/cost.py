"""What a backbone's forward pass costs: multiply-adds counted from the built model.

A convolution costs ``output height x output width x kernel area x input channels x
output channels / groups`` multiply-adds, a depthwise one ``output area x kernel area x
channels x depth multiplier``, a separable one its depthwise part and a 1 x 1 convolution,
a dense layer ``inputs x units`` per position. Everything
else (BatchNorm, activations, pooling, additions) is left out: it is a small share of the
arithmetic, though not of the memory traffic, so the count ranks networks by cost rather
than predicting seconds.
"""

from __future__ import annotations

import math


def count_macs(model) -> int:
    """Multiply-adds of one image through ``model`` (convolutions and dense layers, nested
    models included)."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.Model):
            continue  # its layers are among the flattened ones
        if isinstance(layer, keras.layers.SeparableConv2D):  # depthwise, then pointwise
            out, c_in = layer.output.shape, layer.input.shape[-1]
            k = math.prod(layer.kernel_size)
            total += out[1] * out[2] * c_in * layer.depth_multiplier * (k + out[3])
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.output.shape
            k = math.prod(layer.kernel_size)
            total += out[1] * out[2] * k * out[3]
        elif isinstance(layer, keras.layers.Conv2D):
            out, c_in = layer.output.shape, layer.input.shape[-1]
            k = math.prod(layer.kernel_size)
            total += out[1] * out[2] * k * (c_in // layer.groups) * out[3]
        elif isinstance(layer, keras.layers.Dense):
            shape = layer.output.shape
            positions = math.prod(d for d in shape[1:-1] if d) if len(shape) > 2 else 1
            total += positions * layer.input.shape[-1] * layer.units
    return int(total)
