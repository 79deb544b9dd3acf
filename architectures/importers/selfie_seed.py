"""The seed's "modified ViT" selfie segmenter (`build_model`, saved as class6.ckpt by its
ModelCheckpoint), in any form its code saves, into our selfie graph."""

from architectures.importers.keras_files import seed_importer


def _reference(config):
    from architectures.importers.seed_graphs import seed_vit

    return seed_vit(config.num_classes)  # the seed's graph builds at 256x256 only; weights fit any size


# The seed's stem conv (3x3, 16) and block 1's first expansion (1x1, 16 -> 96).
claims, config_overrides, load = seed_importer(_reference, "scores", "the seed's selfie ViT",
                                               fingerprint=[(3, 3, 3, 16), (1, 1, 16, 96)])
