"""The convert flow, one stage after another (exporter/stages/):

prepare -> export (TFLite per format-table row, QAT, ONNX, the peers' file) -> layer errors / keep-float ->
held-out accuracy -> which int8 file ships -> host latency -> ARM cost -> GPU accelerator -> report.

Options are checked once, when ConvertOptions is made (exporter.options). Files are written into
a staging folder and moved into `<out>/<model>/` only when the whole run succeeded, so a failed
run leaves no partial artifact behind and never touches files it did not make.
"""

from __future__ import annotations

import time
from pathlib import Path

from exporter.options import BenchSpec, ConvertOptions, DataSpec, GateSpec, QuantSpec  # noqa: F401 - the API
from exporter.stages import measure
from exporter.stages.prepare import load_weights, prepare_model  # noqa: F401 - used by inspect and validate
from exporter.stages.run import Run, publish, staging_folder


def convert(opts: ConvertOptions) -> dict:
    from exporter.report import write_report
    from exporter.stages import assemble, export, layer_errors, peers, ptq_methods, qat, ship

    started = time.time()
    with staging_folder(opts.out, opts.model) as staging:
        run = start(opts, staging)
        arts = export.tflite_files(run)
        qat_arts, quantisation = qat.qat_files(run)
        method_arts, methods_section = ptq_methods.method_files(run)
        arts += qat_arts + method_arts + export.onnx_files(run)
        arts += peers.peer_files(run, arts)
        if opts.gate.require_gpu_compatible:
            export.require_gpu_compatible(arts)
        ref = measure.reference(run)
        debug_sections, selective = layer_errors.layer_errors_and_keep_float(run, ref)
        arts = measure.accuracy(run, arts + selective, ref)
        ref_iou = measure.per_class(run.config.labels, ref["per_class_iou"])
        arts, shipped = ship.choose_int8(run, arts, ref_iou)
        arts, bench = measure.latency(run, arts)
        arts, arm = measure.arm_cost(run, arts)
        arts, gpu = measure.gpu(run, arts)
        sections = {"quantisation": {**quantisation, **debug_sections,
                                     **({"ptq_methods": methods_section} if methods_section else {})},
                    "shipped_int8": shipped,
                    "benchmark": bench, "arm": arm, "gpu": gpu}
        report = assemble.report(run, arts, ref, sections, started)
        write_report(report, staging)
        publish(staging, Path(opts.out) / run.name)
    return report


def start(opts: ConvertOptions, staging: Path) -> Run:
    """The float model, its batch-1 export graph and the calibration samples."""
    from calibration.sampling import representative_indices
    from exporter.convert.signature import export_model
    from exporter.progress import say
    from exporter.stages.layer_errors import check_layer_names

    spec, config, splits, model, training = prepare_model(opts)
    fixed = export_model(model, config)
    check_layer_names(opts.quant.keep_float_layers, fixed)  # before any conversion
    calib_idx, missing_idx = representative_indices(splits.train, opts.quant.calibration_samples)
    missing = [config.labels[c] for c in missing_idx]
    if missing:
        say(f"warning: classes absent from calibration samples: {', '.join(missing)}")
    return Run(opts=opts, spec=spec, config=config, splits=splits, model=model, fixed=fixed,
               calib=splits.train.subset(calib_idx), calib_idx=calib_idx, missing_classes=missing, training=training, staging=staging)
