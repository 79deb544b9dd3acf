"""The user's own training code, as the seed writes it (tests only): build the model, fit it briefly,
save it every way that code and its users save, and record what it computes.

    python tests/seed_user_code.py unet|vit OUT --classes N [--size S] [--steps K] --images X.npz

Runs in its own process with nothing of this project imported: only TensorFlow's tf.keras (Keras 2,
as the seed's TF <= 2.15 notebooks had it). Writes OUT/Lips.ckpt (save_weights, the seed's form),
OUT/ckpt_folder/ (a ModelCheckpoint(save_weights_only=True) folder), OUT/weights.h5, OUT/model.h5,
OUT/model.keras, OUT/savedmodel/, and OUT/reference.npz: the model's probabilities for the images
fed the way it was trained (x / 255).
"""

import argparse
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # the seed's tf.keras was Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.keras import layers as L  # noqa: E402


# --- the TF segmentation tutorial's UNet, as in the seed -------------------------------------------
def upsample(filters, size):
    """tensorflow_examples' pix2pix.upsample(filters, size) with its defaults (batchnorm, no dropout)."""
    initializer = tf.random_normal_initializer(0.0, 0.02)
    result = tf.keras.Sequential()
    result.add(L.Conv2DTranspose(filters, size, strides=2, padding="same", kernel_initializer=initializer,
                                 use_bias=False))
    result.add(L.BatchNormalization())
    result.add(L.ReLU())
    return result


def unet_model(output_channels, size, fine_tune=False, encoder_weights=None):
    # The tutorial's weights="imagenet", here a local pretrained file (nothing is downloaded).
    base_model = tf.keras.applications.MobileNetV2(input_shape=[size, size, 3], include_top=False,
                                                   weights=encoder_weights)
    layer_names = ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu"]
    base_model_outputs = [base_model.get_layer(name).output for name in layer_names]
    down_stack = tf.keras.Model(inputs=base_model.input, outputs=base_model_outputs)
    down_stack.trainable = fine_tune  # the seed freezes it; users unfreeze it to fine-tune
    up_stack = [upsample(128, 3), upsample(64, 3), upsample(32, 3)]

    inputs = tf.keras.layers.Input(shape=[size, size, 3])
    skips = down_stack(inputs)
    x = skips[-1]
    skips = reversed(skips[:-1])
    for up, skip in zip(up_stack, skips):
        x = up(x)
        concat = tf.keras.layers.Concatenate()
        x = concat([x, skip])
    last = tf.keras.layers.Conv2DTranspose(filters=output_channels, kernel_size=3, strides=2, padding="same")
    x = last(x)
    return tf.keras.Model(inputs=inputs, outputs=x)


# --- the seed's "modified ViT" (build_model), its structure kept, its debug prints dropped ----------
def convBlock(priorNode, LAYER1=(96, (1, 1), (1, 1)), LAYER2=((3, 3), (1, 1)), LAYER3=(64, (1, 1), (1, 1))):
    conv2d_1 = L.Conv2D(LAYER1[0], LAYER1[1], strides=LAYER1[2], padding="same", use_bias=True, activation="relu")(priorNode)
    depth_conv2d_1 = L.DepthwiseConv2D(LAYER2[0], strides=LAYER2[1], padding="same", use_bias=True, activation="relu")(conv2d_1)
    return L.Conv2D(LAYER3[0], LAYER3[1], strides=LAYER3[2], padding="same", use_bias=True)(depth_conv2d_1)


def reshapeTransposeBlock(priorNode, RESHAPE, TRANSPOSE_PERM=(0, 2, 1, 3)):
    return tf.transpose(tf.reshape(priorNode, RESHAPE), perm=list(TRANSPOSE_PERM))


def transposeReshapeBlock(priorNode, RESHAPE, TRANSPOSE_PERM=(0, 2, 1, 3)):
    return tf.reshape(tf.transpose(priorNode, perm=list(TRANSPOSE_PERM)), RESHAPE)


def largeBlock(priorNode, MUL=128):
    block_2_1 = tf.multiply(priorNode, priorNode)
    block_2_1 = tf.add(block_2_1, block_2_1)
    block_2_2 = L.Conv2D(1, (1, 1), strides=(1, 1), padding="valid", use_bias=True)(block_2_1)
    batch_size = tf.shape(block_2_2)[0]
    block_2_2 = tf.reshape(block_2_2, (batch_size, 16, 1, 64 if MUL == 128 else 16))
    block_2_2 = L.Softmax(axis=-1)(block_2_2)
    batch_size = tf.shape(block_2_2)[0]
    block_2_2 = tf.reshape(block_2_2, (batch_size, 16, 64 if MUL == 128 else 16, 1))
    block_2_3 = L.Conv2D(MUL, (1, 1), strides=(1, 1), padding="valid", use_bias=True)(block_2_1)
    block_2_3 = L.Multiply()([block_2_2, block_2_3])
    block_2_3 = L.Lambda(lambda x: tf.reduce_sum(x, axis=2, keepdims=True))(block_2_3)
    block_2_4 = L.Conv2D(MUL, (1, 1), strides=(1, 1), padding="valid", use_bias=True, activation="relu")(block_2_1)
    block_2_4 = L.Multiply()([block_2_3, block_2_4])
    block_2_4 = L.Conv2D(MUL, (1, 1), strides=(1, 1), padding="valid", use_bias=True)(block_2_4)
    block_2_4 = L.Add()([block_2_4, priorNode])
    block_2_5 = L.Conv2D(MUL * 2, (1, 1), strides=(1, 1), padding="same", use_bias=True)(block_2_1)
    block_2_5 = L.Conv2D(MUL, (1, 1), strides=(1, 1), padding="same", use_bias=True)(block_2_5)
    return L.Add()([block_2_5, block_2_4])


def sep(x, kernel):
    x = L.DepthwiseConv2D(kernel, strides=(1, 1), padding="same", use_bias=True)(x)
    return L.Conv2D(64, (1, 1), strides=(1, 1), padding="valid", use_bias=True)(x)


def build_model(input_shape, classes=6):
    nearest, bilinear = tf.image.ResizeMethod.NEAREST_NEIGHBOR, tf.image.ResizeMethod.BILINEAR
    inputs = L.Input(input_shape)
    x = L.Conv2D(16, (3, 3), strides=(2, 2), padding="same", use_bias=True, activation="relu")(inputs)
    x1 = convBlock(x, LAYER1=(96, (1, 1), (1, 1)), LAYER2=((3, 3), (1, 1)), LAYER3=(64, (1, 1), (1, 1)))
    x1 = convBlock(x1, LAYER1=(384, (1, 1), (1, 1)), LAYER2=((3, 3), (2, 2)), LAYER3=(128, (1, 1), (1, 1)))
    x1_1 = convBlock(x1, LAYER1=(768, (1, 1), (1, 1)), LAYER2=((3, 3), (1, 1)), LAYER3=(128, (1, 1), (1, 1)))
    output1 = L.Add(name="output1")([x1_1, x1])
    x2 = convBlock(output1, LAYER1=(768, (1, 1), (1, 1)), LAYER2=((3, 3), (2, 2)), LAYER3=(256, (1, 1), (1, 1)))
    x2 = L.Conv2D(128, (3, 3), strides=(1, 1), padding="same", use_bias=True, activation="relu")(x2)
    x2 = L.Conv2D(128, (1, 1), strides=(1, 1), padding="same", use_bias=True, activation="relu")(x2)
    x2 = reshapeTransposeBlock(x2, RESHAPE=(8, 4, 8, 512))
    output2 = reshapeTransposeBlock(x2, RESHAPE=(1, 64, 16, 128))
    x3 = largeBlock(largeBlock(output2))
    x3 = transposeReshapeBlock(x3, RESHAPE=(8, 8, 4, 512))
    x3 = transposeReshapeBlock(x3, RESHAPE=(1, 32, 32, 128))
    output3 = L.Conv2D(256, (1, 1), strides=(1, 1), padding="same", use_bias=True, name="output3")(x3)
    x4 = convBlock(output3, LAYER1=(1536, (1, 1), (1, 1)), LAYER2=((3, 3), (2, 2)), LAYER3=(384, (1, 1), (1, 1)))
    x4 = L.Conv2D(192, (3, 3), strides=(1, 1), padding="same", use_bias=True, activation="relu")(x4)
    x4 = L.Conv2D(192, (1, 1), strides=(1, 1), padding="same", use_bias=True, activation="relu")(x4)
    x4 = reshapeTransposeBlock(x4, RESHAPE=(4, 4, 4, 768))
    x4 = reshapeTransposeBlock(x4, RESHAPE=(1, 16, 16, 192))
    for _ in range(4):
        x4 = largeBlock(x4, MUL=192)
    x4 = transposeReshapeBlock(x4, RESHAPE=(4, 4, 4, 768))
    x4 = transposeReshapeBlock(x4, RESHAPE=(1, 16, 16, 192))
    x4 = L.Conv2D(384, (1, 1), strides=(1, 1), padding="same", use_bias=True)(x4)
    x4 = L.DepthwiseConv2D((1, 1), strides=(1, 1), padding="same", use_bias=True)(x4)
    output4 = L.Conv2D(64, (1, 1), strides=(1, 1), padding="valid", use_bias=True, name="output4")(x4)
    output5 = L.Add(name="output5")([sep(output3, (1, 1)), tf.image.resize(output4, size=(32, 32), method=nearest)])
    output6 = L.Add(name="output6")([sep(output1, (1, 1)), tf.image.resize(output5, size=(64, 64), method=nearest)])
    output7 = L.Add(name="output7")([sep(x, (1, 1)), tf.image.resize(output6, size=(128, 128), method=nearest)])
    x8 = sep(output7, (3, 3))
    output8 = L.Add(name="output8")([x8, tf.image.resize(sep(output6, (3, 3)), size=(128, 128), method=bilinear)])
    output9 = L.Add(name="output9")([output8, tf.image.resize(sep(output5, (3, 3)), size=(128, 128), method=bilinear)])
    output10 = L.Add(name="output10")([output9, tf.image.resize(sep(output4, (3, 3)), size=(128, 128), method=bilinear)])
    x11 = output10
    for _ in range(5):
        x11 = L.DepthwiseConv2D((3, 3), strides=(1, 1), padding="same", use_bias=True, activation="relu")(x11)
        x11 = L.Conv2D(32, (1, 1), strides=(1, 1), padding="same", use_bias=True, activation="relu")(x11)
    x11 = L.Conv2DTranspose(32, (2, 2), strides=(2, 2), padding="same", use_bias=True)(x11)
    output11 = L.Conv2D(classes, (1, 1), strides=(1, 1), padding="same", use_bias=True, activation="softmax")(x11)
    return tf.keras.Model(inputs=inputs, outputs=output11)


# The forms the user's code saves, by the name each is written under in OUT (ckpt_folder, written by the
# ModelCheckpoint callback during fit, is always there).
FORMS = {
    "Lips.ckpt": lambda model, path: model.save_weights(path),
    "weights.h5": lambda model, path: model.save_weights(path),
    "model.h5": lambda model, path: model.save(path),
    "model.keras": lambda model, path: model.save(path),
    "savedmodel": lambda model, path: model.save(path),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=["unet", "vit"])
    parser.add_argument("out")
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", required=True, help="npz: train_x, train_y (uint8), eval_x")
    parser.add_argument("--fine-tune", action="store_true", help="UNet: train the encoder too (down_stack.trainable)")
    parser.add_argument("--encoder-weights", help="UNet: a pretrained MobileNetV2 (no top) weights file")
    parser.add_argument("--forms", default=",".join(FORMS),
                        help="which of the saved forms to write (default: all); a test that converts one form "
                             "saves only that one (the SavedModel export alone takes many seconds)")
    args = parser.parse_args()
    tf.keras.utils.set_random_seed(0)
    data = np.load(args.images)
    if args.model == "unet":
        model = unet_model(args.classes, args.size, args.fine_tune, args.encoder_weights)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        model = build_model((256, 256, 3), args.classes)
        loss = tf.keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    os.makedirs(args.out, exist_ok=True)
    # The seed's ModelCheckpoint(save_weights_only=True) callback, writing into its own folder.
    folder = os.path.join(args.out, "ckpt_folder")
    callback = tf.keras.callbacks.ModelCheckpoint(os.path.join(folder, "cp.ckpt"), save_weights_only=True, verbose=0)
    x = data["train_x"].astype("float32") / 255.0  # the tutorial's normalize(): x / 255
    model.fit(x, data["train_y"], batch_size=8 if args.model == "unet" else 1, epochs=args.epochs, verbose=0,
              callbacks=[callback])
    forms = args.forms.split(",")
    assert set(forms) <= set(FORMS), forms
    for form in forms:
        FORMS[form](model, os.path.join(args.out, form))
    scores = model.predict(data["eval_x"].astype("float32") / 255.0, batch_size=1, verbose=0)
    probs = tf.nn.softmax(scores).numpy() if args.model == "unet" else scores
    np.savez(os.path.join(args.out, "reference.npz"), probs=probs)


if __name__ == "__main__":
    main()
