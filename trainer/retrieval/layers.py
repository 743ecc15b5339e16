"""Keras layers of AVLnet: the ResDAVEnet audio encoder, masked pooling, gated embedding units, input guards.

Masks passed between these layers are float32 tensors of 0/1 (1 = a valid step), so
that they serialize and cross a serving boundary as plain numbers. Masked-out
positions are always removed with `where`, never by multiplying with the mask, so
garbage in padding (large values, NaN, Inf) cannot leak into valid outputs.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

_PACKAGE = "avalign"


def _he_normal_fan_out() -> keras.initializers.Initializer:
    # The ResNet / ResDAVEnet initialization: N(0, 2 / (kernel_width * out_channels)).
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _bool_mask(mask):
    return ops.greater(ops.cast(mask, "float32"), 0.0)


def _symmetric_conv1d(inputs, kernel, stride: int):
    """1-D convolution with (width - 1) / 2 zeros on each side, then `stride`.

    Output frame j is centered on input frame j * stride for every input length,
    which is what makes a clip's features independent of how much padding follows
    it (TF "SAME" padding would shift the window by one frame on even lengths). The
    output has ceil(T / stride) frames, the same count as "SAME".

    A width-1 kernel with stride > 1 takes every stride-th frame first and then
    convolves with stride 1: the same outputs, bit for bit, but it keeps the
    convolution off oneDNN's strided 1x1 backward-weights kernel, which on x86
    CPUs writes past its workspace when the input has fewer channels than the
    kernel's channel block (16 with AVX-512, 8 with AVX2; uxlfoundation/oneDNN
    issue 6035, which also reports wrong weight gradients). With finite inputs,
    depending on the batch size, that heap corruption aborts the whole process
    (SIGABRT or SIGSEGV) in `Conv2DBackpropFilter`.
    """
    width = int(kernel.shape[0])
    if width == 1 and stride > 1:
        return ops.conv(inputs[:, ::stride], kernel, strides=1, padding="valid")
    half = (width - 1) // 2
    if half:
        inputs = ops.pad(inputs, [[0, 0], [half, half], [0, 0]])
    return ops.conv(inputs, kernel, strides=stride, padding="valid")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LengthMask(keras.layers.Layer):
    """Turns valid lengths [B] into a float 0/1 mask [B, T] over a reference sequence.

    Lengths are clipped to [0, T]; frame t is valid when t < length.
    """

    def call(self, lengths, reference):
        """Builds the mask.

        Args:
          lengths: [B] integer valid lengths.
          reference: [B, T, ...] tensor whose second axis is the time axis.

        Returns:
          [B, T] float32 mask.
        """
        steps = ops.shape(reference)[1]
        positions = ops.arange(steps, dtype="int32")
        lengths = ops.cast(lengths, "int32")
        return ops.cast(ops.less(positions[None, :], lengths[:, None]), "float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualBlock1D(keras.layers.Layer):
    """ResDAVEnet basic block: two 1 x k convolutions along time with a residual path.

    conv(k, stride) -> BN -> ReLU -> conv(k) -> BN, plus the input (or, when the block
    strides or changes width, a 1x1 strided projection + BN), then ReLU. No
    convolution has a bias. Batch statistics are taken over valid frames only, and
    invalid output frames are zeroed, so every frame a convolution reads beyond a
    clip's end is exactly zero, as at the edge of an unpadded clip.
    """

    def __init__(
        self,
        filters: int,
        kernel_width: int = 9,
        stride: int = 1,
        batchnorm_momentum: float = 0.9,
        batchnorm_epsilon: float = 1e-5,
        **kwargs,
    ):
        """Initializes the block.

        Args:
          filters: output channels.
          kernel_width: odd convolution width in frames.
          stride: 1 or 2, the time stride of the first convolution and the shortcut.
          batchnorm_momentum: moving-average momentum of the batch norms (0.9 is
            PyTorch's default, which the reference model used).
          batchnorm_epsilon: batch norm epsilon.
          **kwargs: base Layer arguments.

        Raises:
          ValueError: a non-positive `filters`, an even `kernel_width` or a stride
            other than 1 or 2.
        """
        super().__init__(**kwargs)
        _check_positive_int("filters", filters)
        _check_positive_int("kernel_width", kernel_width)
        if kernel_width % 2 != 1:
            raise ValueError(f"kernel_width must be odd for symmetric padding, got {kernel_width}.")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}.")
        if not 0.0 <= batchnorm_momentum < 1.0:
            raise ValueError(f"batchnorm_momentum must be in [0, 1), got {batchnorm_momentum!r}.")
        if not batchnorm_epsilon > 0.0:
            raise ValueError(f"batchnorm_epsilon must be > 0, got {batchnorm_epsilon!r}.")
        self.filters = filters
        self.kernel_width = kernel_width
        self.stride = stride
        self.batchnorm_momentum = batchnorm_momentum
        self.batchnorm_epsilon = batchnorm_epsilon
        bn = dict(momentum=batchnorm_momentum, epsilon=batchnorm_epsilon)
        self.bn1 = keras.layers.BatchNormalization(name="bn1", **bn)
        self.bn2 = keras.layers.BatchNormalization(name="bn2", **bn)
        self.shortcut_bn = None

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        self.kernel1 = self.add_weight(
            name="kernel1", shape=(self.kernel_width, in_channels, self.filters), initializer=_he_normal_fan_out()
        )
        self.kernel2 = self.add_weight(
            name="kernel2", shape=(self.kernel_width, self.filters, self.filters), initializer=_he_normal_fan_out()
        )
        out_shape = (None, None, self.filters)
        self.bn1.build(out_shape)
        self.bn2.build(out_shape)
        if self.stride != 1 or in_channels != self.filters:
            self.shortcut_kernel = self.add_weight(
                name="shortcut_kernel", shape=(1, in_channels, self.filters), initializer=_he_normal_fan_out()
            )
            self.shortcut_bn = keras.layers.BatchNormalization(
                name="shortcut_bn", momentum=self.batchnorm_momentum, epsilon=self.batchnorm_epsilon
            )
            self.shortcut_bn.build(out_shape)

    def call(self, inputs, frame_mask, training=None):
        """Runs the block.

        Args:
          inputs: [B, T, C_in], zero at invalid frames.
          frame_mask: [B, T] float 0/1 mask of valid input frames.
          training: batch statistics (True) or moving averages (False).

        Returns:
          (outputs [B, ceil(T / stride), filters] zero at invalid frames, the
          [B, ceil(T / stride)] float32 mask: output frame j is valid when its
          center input frame j * stride is).
        """
        out_mask = frame_mask[:, :: self.stride]
        valid = _bool_mask(out_mask)[:, :, None]
        hidden = _symmetric_conv1d(inputs, self.kernel1, self.stride)
        hidden = ops.relu(self.bn1(hidden, training=training, mask=out_mask))
        hidden = ops.where(valid, hidden, ops.zeros_like(hidden))
        hidden = _symmetric_conv1d(hidden, self.kernel2, 1)
        hidden = self.bn2(hidden, training=training, mask=out_mask)
        if self.shortcut_bn is not None:
            shortcut = _symmetric_conv1d(inputs, self.shortcut_kernel, self.stride)
            shortcut = self.shortcut_bn(shortcut, training=training, mask=out_mask)
        else:
            shortcut = inputs
        outputs = ops.relu(hidden + shortcut)
        return ops.where(valid, outputs, ops.zeros_like(outputs)), out_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_width=self.kernel_width,
            stride=self.stride,
            batchnorm_momentum=self.batchnorm_momentum,
            batchnorm_epsilon=self.batchnorm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResDAVEnet(keras.layers.Layer):
    """ResDAVEnet audio encoder (Harwath et al., IJCV 2020) on log-Mel frames [B, T, F].

    Stem: one convolution spanning all F Mel bins and 1 frame (a per-frame linear map
    F -> `first_conv_channels`, no bias) + BN + ReLU. Then 4 stages of
    `blocks_per_stage` `ResidualBlock1D`s of widths `widths`; the first block of
    each stage strides 2 in time with a 1x1 projection shortcut. A 2-D convolution of
    kernel height 1 over the collapsed frequency axis is the 1-D convolution used
    here.

    Time axis and masks:
      * The input time axis is zero-padded to a multiple of 16 (at least 16), so any
        T >= 0 works and the output has exactly ceil(T / 16) frames (at least 1);
        output frame j is centered on input frame 16 j (0.16 j s at a 10 ms hop).
      * Each stride-2 stage maps a valid length L to ceil(L / 2): output frame j is
        valid iff input frame 2 j is. Four stages give ceil(ceil(ceil(ceil(L/2)/2)/2)/2)
        = ceil(L / 16) valid output frames for a clip of L valid input frames.
      * Frames at invalid positions are zeroed before every convolution and batch
        statistics use valid frames only, so each clip's valid outputs equal those of
        the same clip run alone, unpadded; padding content never matters.
    """

    def __init__(
        self,
        num_mel_bins: int = 40,
        first_conv_channels: int = 128,
        widths: Sequence[int] = (128, 256, 512, 1024),
        blocks_per_stage: int = 2,
        kernel_width: int = 9,
        batchnorm_momentum: float = 0.9,
        batchnorm_epsilon: float = 1e-5,
        **kwargs,
    ):
        """Initializes the encoder.

        Args:
          num_mel_bins: F, the Mel bins of the input (the stem spans all of them).
          first_conv_channels: channels of the stem.
          widths: channels of the 4 residual stages.
          blocks_per_stage: residual blocks per stage.
          kernel_width: odd width of the residual convolutions.
          batchnorm_momentum: moving-average momentum of the batch norms.
          batchnorm_epsilon: batch norm epsilon.
          **kwargs: base Layer arguments.

        Raises:
          ValueError: a non-positive size, not exactly 4 widths, or an even kernel width.
        """
        super().__init__(**kwargs)
        _check_positive_int("num_mel_bins", num_mel_bins)
        _check_positive_int("first_conv_channels", first_conv_channels)
        _check_positive_int("blocks_per_stage", blocks_per_stage)
        widths = list(widths)
        if len(widths) != 4:
            raise ValueError(f"widths must list 4 stage widths, got {widths!r}.")
        for w in widths:
            _check_positive_int("widths[i]", w)
        self.num_mel_bins = num_mel_bins
        self.first_conv_channels = first_conv_channels
        self.widths = widths
        self.blocks_per_stage = blocks_per_stage
        self.kernel_width = kernel_width
        self.batchnorm_momentum = batchnorm_momentum
        self.batchnorm_epsilon = batchnorm_epsilon
        self.stem_bn = keras.layers.BatchNormalization(
            name="stem_bn", momentum=batchnorm_momentum, epsilon=batchnorm_epsilon
        )
        self.blocks = []
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                self.blocks.append(
                    ResidualBlock1D(
                        width,
                        kernel_width=kernel_width,
                        stride=2 if index == 0 else 1,
                        batchnorm_momentum=batchnorm_momentum,
                        batchnorm_epsilon=batchnorm_epsilon,
                        name=f"stage{stage + 1}_block{index + 1}",
                    )
                )

    @property
    def total_stride(self) -> int:
        """Input frames per output frame (16)."""
        return 2 ** len(self.widths)

    @property
    def output_dim(self) -> int:
        """Channels of the output frames (the last stage width)."""
        return self.widths[-1]

    def build(self, input_shape):
        if input_shape[-1] is not None and int(input_shape[-1]) != self.num_mel_bins:
            raise ValueError(
                f"ResDAVEnet expects {self.num_mel_bins} Mel bins on the last axis, got input shape {tuple(input_shape)}."
            )
        self.stem_kernel = self.add_weight(
            name="stem_kernel",
            shape=(self.num_mel_bins, self.first_conv_channels),
            initializer=_he_normal_fan_out(),
        )
        self.stem_bn.build((None, None, self.first_conv_channels))
        channels = self.first_conv_channels
        for block in self.blocks:
            block.build((None, None, channels))
            channels = block.filters

    def call(self, inputs, frame_mask=None, training=None):
        """Encodes log-Mel frames.

        Args:
          inputs: [B, T, num_mel_bins] log-Mel frames.
          frame_mask: optional [B, T] float 0/1 mask of valid frames (default: all).
          training: batch statistics (True) or moving averages (False).

        Returns:
          (frames [B, ceil(T / 16), widths[-1]] zero at invalid frames, the
          [B, ceil(T / 16)] float32 mask of valid output frames).
        """
        if frame_mask is None:
            frame_mask = ops.ones(ops.shape(inputs)[:2], dtype="float32")
        frame_mask = ops.cast(frame_mask, "float32")
        steps = ops.shape(inputs)[1]
        stride = self.total_stride
        # At least one full stride, then a whole number of strides.
        pad = ops.maximum(stride - steps, 0) + (stride - ops.maximum(steps, stride) % stride) % stride
        inputs = ops.pad(inputs, [[0, 0], [0, pad], [0, 0]])
        frame_mask = ops.pad(frame_mask, [[0, 0], [0, pad]])
        valid = _bool_mask(frame_mask)[:, :, None]
        hidden = ops.where(valid, inputs, ops.zeros_like(inputs))
        hidden = ops.matmul(hidden, self.stem_kernel)
        hidden = ops.relu(self.stem_bn(hidden, training=training, mask=frame_mask))
        hidden = ops.where(valid, hidden, ops.zeros_like(hidden))
        for block in self.blocks:
            hidden, frame_mask = block(hidden, frame_mask, training=training)
        return hidden, frame_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            num_mel_bins=self.num_mel_bins,
            first_conv_channels=self.first_conv_channels,
            widths=list(self.widths),
            blocks_per_stage=self.blocks_per_stage,
            kernel_width=self.kernel_width,
            batchnorm_momentum=self.batchnorm_momentum,
            batchnorm_epsilon=self.batchnorm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the valid steps of [B, T, D]; a clip without a valid step pools to zeros."""

    def call(self, inputs, mask):
        """Pools.

        Args:
          inputs: [B, T, D].
          mask: [B, T] float 0/1 mask of valid steps.

        Returns:
          [B, D].
        """
        valid = _bool_mask(mask)
        total = ops.sum(ops.where(valid[:, :, None], inputs, ops.zeros_like(inputs)), axis=1)
        count = ops.sum(ops.cast(valid, inputs.dtype), axis=1, keepdims=True)
        return total / ops.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedMaxPooling(keras.layers.Layer):
    """Max over the valid steps of [B, T, D], optionally L2-normalized.

    AVLnet max-pools each visual stream over the clip's feature steps and
    L2-normalizes it before the streams are concatenated. A clip without a valid
    step pools to zeros (and stays zero after normalization).
    """

    def __init__(self, l2_normalize: bool = False, epsilon: float = 1e-12, **kwargs):
        """Initializes the layer.

        Args:
          l2_normalize: divide the pooled vector by its L2 norm.
          epsilon: lower bound of the norm.
          **kwargs: base Layer arguments.

        Raises:
          ValueError: a non-positive `epsilon`.
        """
        super().__init__(**kwargs)
        if not epsilon > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")
        self.l2_normalize = bool(l2_normalize)
        self.epsilon = epsilon

    def call(self, inputs, mask):
        """Pools.

        Args:
          inputs: [B, T, D].
          mask: [B, T] float 0/1 mask of valid steps.

        Returns:
          [B, D].
        """
        valid = _bool_mask(mask)
        lowest = ops.full_like(inputs, float("-inf"))
        pooled = ops.max(ops.where(valid[:, :, None], inputs, lowest), axis=1)
        any_valid = ops.any(valid, axis=1, keepdims=True)
        pooled = ops.where(any_valid, pooled, ops.zeros_like(pooled))
        if self.l2_normalize:
            squared = ops.sum(ops.square(pooled), axis=-1, keepdims=True)
            pooled = pooled * ops.rsqrt(ops.maximum(squared, self.epsilon**2))
        return pooled

    def get_config(self):
        config = super().get_config()
        config.update(l2_normalize=self.l2_normalize, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GatedEmbeddingUnit(keras.layers.Layer):
    """Gated embedding unit (Miech et al., 2018): linear, then context gating.

    y1 = W1 x + b1;  y = y1 * sigmoid(W2 y1 + b2)  [* 1 / ||.||_2 if l2_normalize].

    Miech et al. L2-normalize the output; AVLnet's units do not (its similarity is a
    plain dot product of unnormalized embeddings), which is the default here.
    """

    def __init__(self, units: int, l2_normalize: bool = False, **kwargs):
        """Initializes the unit.

        Args:
          units: output size.
          l2_normalize: L2-normalize the output (Miech et al.'s variant).
          **kwargs: base Layer arguments.

        Raises:
          ValueError: a non-positive `units`.
        """
        super().__init__(**kwargs)
        _check_positive_int("units", units)
        self.units = units
        self.l2_normalize = bool(l2_normalize)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"GatedEmbeddingUnit needs a known input size, got input shape {tuple(input_shape)}.")
        in_dim = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(in_dim, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.gate_kernel = self.add_weight(
            name="gate_kernel", shape=(self.units, self.units), initializer="glorot_uniform"
        )
        self.gate_bias = self.add_weight(name="gate_bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        """Embeds [B, D_in] into [B, units]."""
        hidden = ops.matmul(inputs, self.kernel) + self.bias
        outputs = hidden * ops.sigmoid(ops.matmul(hidden, self.gate_kernel) + self.gate_bias)
        if self.l2_normalize:
            squared = ops.sum(ops.square(outputs), axis=-1, keepdims=True)
            outputs = outputs * ops.rsqrt(ops.maximum(squared, 1e-24))
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, l2_normalize=self.l2_normalize)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PairValidity(keras.layers.Layer):
    """1.0 for an audio-visual pair usable in the loss and in retrieval, else 0.0.

    A pair is usable when `audio_present` > 0, at least one output audio frame is
    valid and at least one visual step is valid (both masks come after
    `trainer.guards.NonFiniteGuard`, so clips with NaN/Inf are not usable).
    """

    def call(self, audio_present, audio_frame_mask, visual_mask):
        """Combines the flags.

        Args:
          audio_present: [B] float, 0 for a clip without audio.
          audio_frame_mask: [B, T_a] float 0/1 mask of valid encoder frames.
          visual_mask: [B, T_v] float 0/1 mask of valid visual steps.

        Returns:
          [B] float32.
        """
        usable = ops.logical_and(
            _bool_mask(audio_present),
            ops.logical_and(ops.any(_bool_mask(audio_frame_mask), axis=1), ops.any(_bool_mask(visual_mask), axis=1)),
        )
        return ops.cast(usable, "float32")
