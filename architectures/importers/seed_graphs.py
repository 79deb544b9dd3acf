"""The user's own graphs, rebuilt as the seed's code builds them, so Keras' own loaders read the
files that code saved (`keras_seed`), and each weighted layer is paired with ours.

Why rebuild them: Keras matches a TF checkpoint by its object graph and an .h5 weights file by the
order of the layers, and both depend on the exact graph the user built (the tutorial UNet nests
MobileNetV2 in a `down_stack` model and its decoder in three `Sequential`s; the seed's ViT creates
its layers in its own order). Our graphs compute the same functions in another layout, so loading a
user's file into ours either failed or, for some forms, succeeded by luck of order.

Each builder returns (model, pairs): `pairs` maps each weighted layer of the user's graph (the
object) to the name of the layer in our graph that takes its weights unchanged.
"""

from __future__ import annotations

# The TF segmentation tutorial's encoder taps (the seed's `layer_names`).
UNET_SKIPS = ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu")
UNET_UP = (128, 64, 32)


def tutorial_unet(num_classes: int, size: int):
    """The seed's UNet: tf.keras.applications.MobileNetV2 cut at four taps as a nested `down_stack`
    model, three pix2pix `upsample` blocks (Conv2DTranspose without bias, BatchNorm, ReLU, as
    tensorflow_examples defines them with norm_type='batchnorm'), and a 3x3 stride-2 transposed conv."""
    from exporter.keras import keras

    L = keras.layers
    base = keras.applications.MobileNetV2(input_shape=[size, size, 3], include_top=False, weights=None)
    down_stack = keras.Model(inputs=base.input, outputs=[base.get_layer(n).output for n in UNET_SKIPS])
    down_stack.trainable = False

    def upsample(filters):
        init = keras.initializers.RandomNormal(0.0, 0.02)
        return keras.Sequential([L.Conv2DTranspose(filters, 3, strides=2, padding="same", kernel_initializer=init,
                                                   use_bias=False), L.BatchNormalization(), L.ReLU()])

    up_stack = [upsample(f) for f in UNET_UP]
    inputs = L.Input(shape=[size, size, 3])
    skips = down_stack(inputs)
    x = skips[-1]
    for up, skip in zip(up_stack, reversed(skips[:-1])):
        x = L.Concatenate()([up(x), skip])
    last = L.Conv2DTranspose(num_classes, 3, strides=2, padding="same")
    model = keras.Model(inputs, last(x))

    pairs = {layer: layer.name for layer in down_stack.layers if layer.weights}  # MobileNetV2's own names
    for i, up in enumerate(up_stack):
        pairs[up.layers[0]] = f"up{i}_deconv"
        pairs[up.layers[1]] = f"up{i}_bn"
    pairs[last] = "logits"
    return model, pairs


def seed_vit(num_classes: int):
    """The seed's "modified ViT" (`build_model`), at its only size, 256x256 (its reshapes hard-code
    batch 1 and the 1/8 and 1/16 grids). Same ops in the same order as the seed's code; the layer
    our selfie graph names for each weighted layer is recorded as it is created."""
    from exporter.keras import keras, tf

    L = keras.layers
    pairs = {}

    def made(layer, ours):
        pairs[layer] = ours
        return layer

    def conv(filters, kernel, ours, strides=1, padding="same", activation=None):
        return made(L.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=True,
                             activation=activation), ours)

    def dw(kernel, ours, strides=1, activation=None):
        return made(L.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=True,
                                      activation=activation), ours)

    def conv_block(x, expand, stride, out, name):
        x = conv(expand, 1, f"{name}_expand", activation="relu")(x)
        x = dw(3, f"{name}_dw", strides=stride, activation="relu")(x)
        return conv(out, 1, f"{name}_project")(x)

    def reshape_transpose(x, shape):
        return tf.transpose(tf.reshape(x, shape), perm=[0, 2, 1, 3])

    def transpose_reshape(x, shape):
        return tf.reshape(tf.transpose(x, perm=[0, 2, 1, 3]), shape)

    def large_block(x, mul, name):
        s = tf.multiply(x, x)
        s = tf.add(s, s)
        score = conv(1, 1, f"{name}_score", padding="valid")(s)
        patches = 64 if mul == 128 else 16
        score = tf.reshape(score, (tf.shape(score)[0], 16, 1, patches))
        score = L.Softmax(axis=-1)(score)
        score = tf.reshape(score, (tf.shape(score)[0], 16, patches, 1))
        value = conv(mul, 1, f"{name}_value", padding="valid")(s)
        context = L.Multiply()([score, value])
        context = L.Lambda(lambda t: tf.reduce_sum(t, axis=2, keepdims=True))(context)
        gate = conv(mul, 1, f"{name}_gate_conv", padding="valid", activation="relu")(s)
        mixed = L.Multiply()([context, gate])
        mixed = conv(mul, 1, f"{name}_proj", padding="valid")(mixed)
        mixed = L.Add()([mixed, x])
        ffn = conv(2 * mul, 1, f"{name}_ffn_expand")(s)
        ffn = conv(mul, 1, f"{name}_ffn_project")(ffn)
        return L.Add()([ffn, mixed])

    def dw_pw(x, kernel, ours):
        x = dw(kernel, f"{ours}_dw")(x)
        return conv(64, 1, f"{ours}_pw", padding="valid")(x)

    def resize(x, size, method):
        return tf.image.resize(x, size=(size, size), method=method)

    inputs = L.Input((256, 256, 3))
    x = conv(16, 3, "stem_conv", strides=2, activation="relu")(inputs)
    x1 = conv_block(x, 96, 1, 64, "block1a")
    x1 = conv_block(x1, 384, 2, 128, "block1b")
    x1_1 = conv_block(x1, 768, 1, 128, "block1c")
    output1 = L.Add()([x1_1, x1])

    x2 = conv_block(output1, 768, 2, 256, "block2a")
    x2 = conv(128, 3, "block2_conv3x3", activation="relu")(x2)
    x2 = conv(128, 1, "block2_conv1x1", activation="relu")(x2)
    x2 = reshape_transpose(x2, (8, 4, 8, 512))
    x3 = reshape_transpose(x2, (1, 64, 16, 128))
    for i in range(2):
        x3 = large_block(x3, 128, f"stage3_attn{i}")
    x3 = transpose_reshape(x3, (8, 8, 4, 512))
    x3 = transpose_reshape(x3, (1, 32, 32, 128))
    output3 = conv(256, 1, "output3")(x3)

    x4 = conv_block(output3, 1536, 2, 384, "block4a")
    x4 = conv(192, 3, "block4_conv3x3", activation="relu")(x4)
    x4 = conv(192, 1, "block4_conv1x1", activation="relu")(x4)
    x4 = reshape_transpose(x4, (4, 4, 4, 768))
    x4 = reshape_transpose(x4, (1, 16, 16, 192))
    for i in range(4):
        x4 = large_block(x4, 192, f"stage4_attn{i}")
    x4 = transpose_reshape(x4, (4, 4, 4, 768))
    x4 = transpose_reshape(x4, (1, 16, 16, 192))
    x4 = conv(384, 1, "block4_expand_out")(x4)
    x4 = dw(1, "block4_dw_out")(x4)
    output4 = conv(64, 1, "output4", padding="valid")(x4)

    nearest, bilinear = tf.image.ResizeMethod.NEAREST_NEIGHBOR, tf.image.ResizeMethod.BILINEAR
    output5 = L.Add()([dw_pw(output3, 1, "output5_lateral"), resize(output4, 32, nearest)])
    output6 = L.Add()([dw_pw(output1, 1, "output6_lateral"), resize(output5, 64, nearest)])
    output7 = L.Add()([dw_pw(x, 1, "output7_lateral"), resize(output6, 128, nearest)])
    x8 = dw_pw(output7, 3, "block8")
    output8 = L.Add()([x8, resize(dw_pw(output6, 3, "block8_skip"), 128, bilinear)])
    output9 = L.Add()([output8, resize(dw_pw(output5, 3, "block9_skip"), 128, bilinear)])
    output10 = L.Add()([output9, resize(dw_pw(output4, 3, "block10_skip"), 128, bilinear)])

    x11 = output10
    for i in range(5):
        x11 = dw(3, f"head{i}_dw", activation="relu")(x11)
        x11 = conv(32, 1, f"head{i}_pw", activation="relu")(x11)
    x11 = made(L.Conv2DTranspose(32, 2, strides=2, padding="same", use_bias=True), "head_upsample")(x11)
    scores = conv(num_classes, 1, "scores", activation="softmax")(x11)
    return keras.Model(inputs, scores), pairs
