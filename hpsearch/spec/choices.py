"""The spec's closed choices as enums: activations, inits, optimizers, precisions, preprocessing, samplers."""

from __future__ import annotations

import enum


class Activation(str, enum.Enum):
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    PRELU = "prelu"
    ELU = "elu"
    SELU = "selu"
    GELU = "gelu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    MAXOUT = "maxout"


class Init(str, enum.Enum):
    SMALL_RANDOM = "small_random"  # N(0, init_std^2), the lecture's 0.01 * randn
    XAVIER = "xavier"  # N(0, 1/fan_in)
    KAIMING = "kaiming"  # N(0, 2/fan_in)


class Optimizer(str, enum.Enum):
    SGD = "sgd"
    MOMENTUM = "momentum"
    NESTEROV = "nesterov"
    ADAM = "adam"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast: matmuls and convolutions in bfloat16; weights, optimizer state and loss in fp32
    AUTO = "auto"  # bf16 where the device has it natively and a few timed steps say it is faster


class Preprocess(str, enum.Enum):
    NONE = "none"
    MEAN_IMAGE = "mean_image"
    PER_CHANNEL_MEAN = "per_channel_mean"
    PER_CHANNEL_STANDARDIZE = "per_channel_standardize"


class Sampler(str, enum.Enum):
    RANDOM = "random"
    GRID = "grid"
    TPE = "tpe"  # Optuna's TPE through ask-and-tell (hpsearch.search.tpe): needs the tpe extra
