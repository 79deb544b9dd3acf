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


def export_model(model, config, batch_size: int | None = 1):
    """A batch-1 rebuild of `model` with the same weights (so every reshape sees batch 1).

    An architecture may export an equivalent, faster graph (`ArchSpec.export_options` and
    `export_weights`, e.g. SegFormer's folded decoder); the function computed stays the same.
    The config's output contract (exporter.output_contract: logits out, the decoder's resolution)
    is applied here and nowhere else. `batch_size=None`: the same graph at any batch, for
    fine-tuning it (QAT trains the export graph, exporter.qat.export_graph_qat_model).
    """
    from architectures import get_spec

    spec = get_spec(config.name)
    fixed = _export_build(config, batch_size)
    if spec.export_weights is not None:
        spec.export_weights(model, fixed)
    else:
        fixed.set_weights(model.get_weights())
    from exporter.output_contract import strip

    return strip(fixed, config)


def export_graph(config, batch_size: int | None = 1):
    """The export graph of `config` (export options, output contract) with its builder's initial
    weights: the structure `export_model` fills, for rebuilding a model whose weights come later."""
    from exporter.output_contract import strip

    return strip(_export_build(config, batch_size), config)


def _export_build(config, batch_size):
    import dataclasses

    from architectures import build, get_spec

    spec = get_spec(config.name)
    return build(dataclasses.replace(config, batch_size=batch_size, options={**config.options, **spec.export_options}))


def concrete_function(model, config):
    from exporter.keras import tf

    @tf.function(input_signature=[input_spec(config)])
    def serve(pixels):
        return {OUTPUT_NAME: model(pixels, training=False)}

    return serve.get_concrete_function()
