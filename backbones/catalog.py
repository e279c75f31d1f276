"""The backbones bench knows, registered when the package is imported.

Sizes, preprocessing and weight file names come from the Keras applications modules
(``keras/src/applications/*.py``); tests/test_backbones.py checks each record against
Keras (builds at ``min_size``, feature width, clean block cuts, preprocessing, and the
exact file name each constructor asks ``get_file`` for).

Block boundaries sit at the end of each family's stages (where resolution or width
changes), with the top boundaries closer together because small datasets rarely
unfreeze more than one to three blocks. Every boundary is a clean cut: no skip
connection crosses it.
"""

from __future__ import annotations

import math

from backbones.registry import Backbone, register

_KEEP_PREPROCESSING = (("include_preprocessing", True),)

register(Backbone(
    name="xception",
    family="xception",
    constructor="keras.applications.Xception",
    default_size=299,
    min_size=71,
    preprocessing="tf",
    feature_width=2048,
    gmacs=8.355,
    # Keras leaves the residual Add layers auto-named ("add_7"), so build() names
    # them block2_add ... block13_add (the block each one ends).
    blocks=("block4_add", "block8_add", "block11_add", "block12_add", "block13_add",
            "block14_sepconv1_act", "block14_sepconv2_act"),
    renames=tuple(("Add", i, f"block{i + 2}_add") for i in range(12)),
    weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    notes="Entry flow ends at block4_add, middle flow at block12_add.",
))

register(Backbone(
    name="resnet50",
    family="resnet",
    constructor="keras.applications.ResNet50",
    default_size=224,
    min_size=32,
    preprocessing="caffe",
    feature_width=2048,
    gmacs=3.856,
    blocks=("conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
            "conv5_block1_out", "conv5_block2_out", "conv5_block3_out"),
    weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
))

register(Backbone(
    name="resnet50v2",
    family="resnet_v2",
    constructor="keras.applications.ResNet50V2",
    default_size=224,
    min_size=32,
    preprocessing="tf",
    feature_width=2048,
    gmacs=3.48,
    blocks=("conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
            "conv5_block1_out", "conv5_block2_out", "post_relu"),
    weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    notes="Pre-activation ResNet: the top block includes the final post_bn/post_relu.",
))

register(Backbone(
    name="inception_v3",
    family="inception_v3",
    constructor="keras.applications.InceptionV3",
    default_size=299,
    min_size=75,
    preprocessing="tf",
    feature_width=2048,
    gmacs=5.711,
    blocks=("mixed2", "mixed5", "mixed7", "mixed8", "mixed9", "mixed10"),
    weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    notes="mixed3 and mixed8 are the grid-reduction modules.",
))

register(Backbone(
    name="mobilenet_v2",
    family="mobilenet_v2",
    constructor="keras.applications.MobileNetV2",
    default_size=224,
    min_size=32,
    preprocessing="tf",
    feature_width=1280,
    gmacs=0.299,
    blocks=("block_2_add", "block_5_add", "block_9_add", "block_12_add",
            "block_15_add", "block_16_project_BN", "out_relu"),
    weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
    weights_sizes=(96, 128, 160, 192, 224),
    notes="ImageNet weights exist for 96-224 px in steps of 32; other sizes get the "
          "224 px weights (Keras warns).",
))

register(Backbone(
    name="mobilenet_v3_small",
    family="mobilenet_v3",
    constructor="keras.applications.MobileNetV3Small",
    default_size=224,
    min_size=32,
    preprocessing="inside",
    feature_width=576,
    gmacs=0.055,
    # The final hard-swish Activation is auto-named; build() names it.
    blocks=("expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_7_add",
            "expanded_conv_9_add", "expanded_conv_10_add", "conv_1_activation"),
    renames=(("Activation", -1, "conv_1_activation"),),
    constructor_kwargs=_KEEP_PREPROCESSING,
    weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    notes="Rescales to [-1, 1] inside the model. The 1024-wide conv_2 layer belongs "
          "to Keras' top, so the no-top feature map has 576 channels.",
))

register(Backbone(
    name="efficientnet_b0",
    family="efficientnet",
    constructor="keras.applications.EfficientNetB0",
    default_size=224,
    min_size=32,
    preprocessing="inside",
    feature_width=1280,
    gmacs=0.385,
    blocks=("block2b_add", "block3b_add", "block4c_add", "block5c_add",
            "block6d_add", "block7a_project_bn", "top_activation"),
    weights_file="efficientnetb0_notop.h5",
    # keras.applications.efficientnet.IMAGENET_STDDEV_RGB
    imagenet_rescale=tuple(1.0 / math.sqrt(s) for s in (0.229, 0.224, 0.225)),
    notes="Rescaling and ImageNet normalisation are layers of the model.",
))

register(Backbone(
    name="efficientnetv2_b0",
    family="efficientnet_v2",
    constructor="keras.applications.EfficientNetV2B0",
    default_size=224,
    min_size=32,
    preprocessing="inside",
    feature_width=1280,
    gmacs=0.717,
    blocks=("block2b_add", "block3b_add", "block4c_add", "block5e_add",
            "block6e_add", "block6h_add", "top_activation"),
    constructor_kwargs=_KEEP_PREPROCESSING,
    weights_file="efficientnetv2-b0_notop.h5",
    notes="Rescaling and ImageNet normalisation are layers of the model.",
))

register(Backbone(
    name="densenet121",
    family="densenet",
    constructor="keras.applications.DenseNet121",
    default_size=224,
    min_size=32,
    preprocessing="torch",
    feature_width=1024,
    gmacs=2.833,
    blocks=("pool2_pool", "pool3_pool", "pool4_pool", "conv5_block8_concat",
            "conv5_block12_concat", "conv5_block14_concat", "relu"),
    weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    notes="Dense blocks end at the transition layers pool2-pool4; the last dense "
          "block (16 layers) is cut every few layers.",
))

register(Backbone(
    name="convnext_tiny",
    family="convnext",
    constructor="keras.applications.ConvNeXtTiny",
    default_size=224,
    min_size=32,
    preprocessing="inside",
    feature_width=768,
    gmacs=4.455,
    # Residual adds inside stages are keras ops, not layers, so the only clean cuts
    # that are layers are the stem and the downsampling layers between stages.
    # The final LayerNormalization is auto-named; build() names it as Keras' head does.
    blocks=("convnext_tiny_stem", "convnext_tiny_downsampling_block_0",
            "convnext_tiny_downsampling_block_1", "convnext_tiny_downsampling_block_2",
            "convnext_tiny_head_layernorm"),
    renames=(("LayerNormalization", -1, "convnext_tiny_head_layernorm"),),
    constructor_kwargs=_KEEP_PREPROCESSING,
    weights_file="convnext_tiny_notop.h5",
    notes="Normalises inside the model. Unfreezing is per stage (3, 3, 9, 3 blocks), "
          "so one block already trains the last stage.",
))

register(Backbone(
    name="vgg16",
    family="vgg",
    constructor="keras.applications.VGG16",
    default_size=224,
    min_size=32,
    preprocessing="caffe",
    feature_width=512,
    gmacs=15.347,
    blocks=("block2_pool", "block3_pool", "block4_pool", "block5_conv1",
            "block5_conv2", "block5_pool"),
    weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
))
