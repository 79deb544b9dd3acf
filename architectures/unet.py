"""The seed's UNet: MobileNetV2 encoder with pix2pix-style transposed-conv decoder.

Built as one flat functional graph (the encoder's layers are applied directly to our input
tensor) because tfmot refuses a Keras model nested inside another.
"""

from architectures import ArchSpec, register

# Encoder taps, shallow to deep (strides 2, 4, 8, 16 of the input).
SKIP_LAYERS = (
    "block_1_expand_relu",
    "block_3_expand_relu",
    "block_6_expand_relu",
    "block_13_expand_relu",
)
DECODER_FILTERS = (128, 64, 32)
# MobileNetV2 trained from scratch with Keras' default BN momentum (0.999) predicts only the
# background for epochs; 0.9 lets its running statistics follow the weights.
BN_MOMENTUM = 0.9


def build_unet(config):
    from exporter.keras import keras

    from architectures.layers import normalise_pixels, pixel_input

    opts = config.options
    inputs = pixel_input(config)
    x = normalise_pixels(inputs, config)  # MobileNetV2 expects [-1, 1]; the TF tutorial trains on [0, 1]
    encoder = keras.applications.MobileNetV2(
        input_tensor=x,
        include_top=False,
        weights=opts.get("encoder_weights"),
        alpha=opts["alpha"],
    )
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
        if opts["freeze_encoder"]:
            layer.trainable = False
    skips = [encoder.get_layer(name).output for name in SKIP_LAYERS]
    # Same weights either way; "subpixel" computes each transposed conv as CONV_2D +
    # DEPTH_TO_SPACE (architectures/subpixel.py), the faster form in int8 and on GPU delegates.
    if opts["deconv"] in ("subpixel", "phases"):
        from architectures.subpixel import SubpixelConv2DTranspose, cheapest_form

        def deconv(filters, name, use_bias, activation=None):
            # "phases": per layer the cheaper of the two forms (the 3-class logits layer is dense).
            Deconv = cheapest_form(filters, 3, 2) if opts["deconv"] == "phases" else SubpixelConv2DTranspose
            return Deconv(filters, 3, 2, use_bias=use_bias, activation=activation, name=name)
    else:
        def deconv(filters, name, use_bias, activation=None):
            return keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=use_bias,
                                                activation=activation, name=name)

    x = skips[-1]
    fold = bool(opts.get("fold_decoder_bn"))
    for i, (filters, skip) in enumerate(zip(DECODER_FILTERS, reversed(skips[:-1]))):
        # fold_decoder_bn (export only, `fold_decoder_bn_weights`): the BN's scale and shift live
        # in the deconv's kernel and bias, as the converter folds BNs after CONV_2D itself; after
        # the phase convs' DEPTH_TO_SPACE it cannot, and the BN would stay MUL + ADD at full size.
        # With it the ReLU goes into the deconv too (per phase: fused into each CONV_2D; after
        # DEPTH_TO_SPACE an int8 RELU ran on TFLite's reference kernel, 39 M instructions).
        x = deconv(filters, f"up{i}_deconv", use_bias=fold, activation="relu" if fold else None)(x)
        if not fold:
            x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"up{i}_bn")(x)
            x = keras.layers.ReLU(name=f"up{i}_relu")(x)
        x = keras.layers.Concatenate(name=f"up{i}_concat")([x, skip])
    scores = deconv(config.num_classes, "logits", use_bias=True)(x)
    return keras.Model(inputs, scores, name="unet")


def fold_decoder_bn_weights(model, fixed) -> None:
    """Trained weights into the export graph built with fold_decoder_bn: every layer's weights as
    they are, except each decoder deconv takes its BN (inference statistics) as kernel and bias."""
    import numpy as np

    for layer in fixed.layers:
        if not layer.weights:
            continue
        source = model.get_layer(layer.name)
        if layer.name.startswith("up") and layer.name.endswith("_deconv"):
            bn = model.get_layer(layer.name[: -len("_deconv")] + "_bn")
            gamma, beta, mean, var = bn.get_weights()
            scale = gamma / np.sqrt(var + bn.epsilon)
            (kernel,) = source.get_weights()  # [k, k, filters, in]
            layer.set_weights([kernel * scale[None, None, :, None], beta - mean * scale])
        else:
            layer.set_weights(source.get_weights())


def encoder_layers(model) -> list:
    """MobileNetV2's layers: everything but the decoder (`up*`) and the `logits` layer."""
    return [layer for layer in model.layers if not layer.name.startswith("up") and layer.name != "logits"]


register(
    ArchSpec(
        name="unet",
        description="MobileNetV2 encoder + pix2pix decoder (the seed's UNet)",
        builder=build_unet,
        labels=("pet", "background", "border"),  # Oxford-IIIT Pet trimap values 1..3
        input_size=(256, 256),
        input_norm="-1,1",  # MobileNetV2's x / 127.5 - 1
        output="logits",
        min_input=32,
        input_multiple=32,
        options={"alpha": 1.0, "freeze_encoder": False, "encoder_weights": None, "deconv": "transpose"},
        # Exported with each transposed conv as per-phase convolutions (same weights and function,
        # architectures/subpixel.py): XNNPACK's int8 TRANSPOSE_CONV runs a one-row GEMM kernel, 2/3
        # of the int8 file's instructions on an emulated Cortex-A76 (256x256: 192.4 M -> 144.3 M),
        # and the float32 file's 495.9 M -> 387.3 M; the decoder BNs folded into them. The 3-class
        # logits layer takes the dense sub-pixel form (subpixel.cheapest_form): 128x128 A76 int8
        # 34.21 M -> 29.73 M, float32 96.50 M -> 91.53 M (2.82x -> 3.08x).
        export_options={"deconv": "phases", "fold_decoder_bn": True},
        export_weights=fold_decoder_bn_weights,
        learning_rate=1e-3,
        encoder_layers=encoder_layers,
    )
)
