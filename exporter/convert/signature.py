"""The export signature: a static batch of 1 of RGB float pixels.

A dynamic batch leaves Shape/StridedSlice/Pack ops around TRANSPOSE_CONV in TFLite and makes
Dense layers on tokens convert through a float Tensordot path; batch 1 is what apps run.
"""

INPUT_NAME = "pixels"
OUTPUT_NAME = "scores"


def input_spec(config):
    from exporter.keras import tf

    h, w = config.input_size
    return tf.TensorSpec((1, h, w, 3), tf.float32, name=INPUT_NAME)


def export_model(model, config):
    """A batch-1 rebuild of `model` with the same weights (so every reshape sees batch 1).

    An architecture may export an equivalent, faster graph (`ArchSpec.export_options` and
    `export_weights`, e.g. SegFormer's folded decoder); the function computed stays the same.
    The config's output contract (exporter.output_contract: logits out, the decoder's resolution)
    is applied here and nowhere else.
    """
    import dataclasses

    from architectures import build, get_spec

    spec = get_spec(config.name)
    export_config = dataclasses.replace(config, batch_size=1, options={**config.options, **spec.export_options})
    fixed = build(export_config)
    if spec.export_weights is not None:
        spec.export_weights(model, fixed)
    else:
        fixed.set_weights(model.get_weights())
    from exporter.output_contract import strip

    return strip(fixed, config)


def concrete_function(model, config):
    from exporter.keras import tf

    @tf.function(input_signature=[input_spec(config)])
    def serve(pixels):
        return {OUTPUT_NAME: model(pixels, training=False)}

    return serve.get_concrete_function()
