"""QAT on the training graph (before issue 28) vs the export graph (what --qat fine-tunes now), and
the post-training file of the export graph, for one architecture at 128x128: A76 instructions per
inference (one held-out sample) and held-out agreement with the float Keras model (host LiteRT, 32
synthetic scenes). One QAT epoch over 160 synthetic training scenes (or STEPS steps), distilled.

    python tools/qat_graph_probe.py MODEL WEIGHTS.h5 OUT_DIR [STEPS]

WEIGHTS.h5: a `exporter train` run's weights.h5 (its state.json beside it names the labels).
Needs `make arm-env`. Counts do not depend on the weights; the agreement does.
"""
import json, sys, time
from pathlib import Path
import numpy as np
from architectures import build, get_spec, resolve_config
from calibration.synthetic import synthetic_splits
from exporter.convert.signature import export_model
from exporter.convert.tflite import to_tflite, op_histogram
from exporter.qat import qat_model, export_graph_qat_model, fine_tune, to_int8_tflite
from exporter.arm.runner import arm_cost
from exporter.runtimes import input_tensor, output_scores
from ai_edge_litert.interpreter import Interpreter

name, weights, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else None
out.mkdir(parents=True, exist_ok=True)
state = json.load(open(Path(weights).parent / "state.json"))
labels = state["fingerprint"]["model"]["labels"]
spec = get_spec(name)
config = resolve_config(name, input_size=128, labels=labels)
model = build(config)
model.load_weights(weights)
splits = synthetic_splits(160, 32, (128, 128), len(labels))
calib = splits.train.images[:32]
val = splits.val.images
ref = np.argmax(model.predict(val.astype(np.float32), batch_size=8, verbose=0), axis=-1)

def measure(tag, blob):
    path = out / f"{name}_{tag}.tflite"
    path.write_bytes(blob)
    it = Interpreter(model_content=blob); it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    agree = 0
    for k, img in enumerate(val):
        it.set_tensor(i["index"], input_tensor(img[None], i)); it.invoke()
        agree += int((np.argmax(output_scores(it.get_tensor(o["index"]), o)[0], -1) == ref[k]).sum())
    agreement = agree / ref.size
    cost = arm_cost(path, [input_tensor(val[0][None], i)], invokes=1)
    ops = op_histogram(blob)
    print(f"RESULT {name} {tag}: A76 {cost.instructions / 1e6:.2f} M, held-out agreement {100 * agreement:.3f} % "
          f"({len(val)} samples), TRANSPOSE_CONV {ops.get('TRANSPOSE_CONV', 0)}, ops {sum(ops.values())}", flush=True)

lr = spec.learning_rate * 0.01
measure("ptq_export", to_tflite(export_model(model, config), config, "int8", calib))
for tag, make in (("qat_training_graph", qat_model), ("qat_export_graph", export_graph_qat_model)):
    t = time.time()
    qat = make(model, config)
    losses = fine_tune(qat, splits, spec, epochs=1, learning_rate=lr, batch_size=16, calibration_samples=32,
                       teacher=model, steps_per_epoch=steps)
    blob = to_int8_tflite(qat, config, calib)
    print(f"{tag}: fine-tuned and converted in {time.time() - t:.0f} s, loss {losses}", flush=True)
    measure(tag, blob)
