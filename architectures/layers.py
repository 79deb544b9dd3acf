"""Small Keras layers shared by the architectures.

Everything here is a real Keras layer (not a raw `tf.` op or a Lambda): tfmot's quantize_model
cannot wrap TFOpLambda/Lambda nodes, and the TFLite converter maps these to builtin ops.
"""

from exporter.keras import keras, tf


def pixel_input(config, name: str = "pixels"):
    """The export contract's input: RGB pixels 0..255, float32, NHWC."""
    h, w = config.input_size
    return keras.Input(shape=(h, w, 3), batch_size=config.batch_size, name=name, dtype="float32")


def scale_pixels(x, scale: float, offset: float, name: str = "normalise"):
    """Normalisation lives inside the graph so every runtime gets raw 0..255 pixels."""
    return keras.layers.Rescaling(scale, offset=offset, name=name)(x)


@keras.utils.register_keras_serializable(package="segexport")
class HardSwish(keras.layers.Layer):
    """x * relu6(x + 3) / 6 as one layer; TFLite lowers it to its HARD_SWISH builtin."""

    def call(self, x):
        return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


@keras.utils.register_keras_serializable(package="segexport")
class HardSigmoid(keras.layers.Layer):
    """relu6(x + 3) / 6 (MobileNetV3's hard sigmoid, not Keras 2's 0.2x+0.5 variant)."""

    def call(self, x):
        return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
