"""The seed's UNet (TensorFlow's segmentation tutorial: MobileNetV2 `down_stack` + pix2pix decoder),
in any form its code saves, into our UNet. It trains on x / 255: convert with `--input-norm 0,1`."""

from architectures.importers.keras_files import seed_importer


def _reference(config):
    from architectures.importers.seed_graphs import tutorial_unet

    return tutorial_unet(config.num_classes, config.input_size[0])


# MobileNetV2's Conv1 and the first depthwise kernel (alpha 1.0, as the tutorial builds it).
claims, config_overrides, load = seed_importer(_reference, "logits", "the TF segmentation tutorial's UNet",
                                               fingerprint=[(3, 3, 3, 32), (3, 3, 32, 1)])
