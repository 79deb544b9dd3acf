"""The program exporter.arm.runner runs on the emulated aarch64 CPU: `python3.11 guest.py WORKDIR`.

It runs under the guest's own Python with only numpy and ai_edge_litert (nothing of the exporter
is importable there). WORKDIR/job.json names the model, the input .npy files per sample and the
number of invokes per sample; each invoke is bracketed by two os.getppid() calls, which the
instruction-counting plugin turns into counter snapshots. The guest writes WORKDIR/outputs/ (the
raw output tensors of each sample's last invoke) and WORKDIR/result.json (the order of the
brackets, the tensor details). Any failure ends with one line on stderr and exit status 1.
"""

import json
import os
import sys


def main(work: str) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    with open(os.path.join(work, "job.json")) as f:
        job = json.load(f)
    interpreter = Interpreter(model_path=job["model"], num_threads=1)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    samples = [[np.load(path) for path in sample] for sample in job["inputs"]]
    for i, sample in enumerate(samples):
        if len(sample) != len(inputs):
            raise ValueError(f"sample {i} has {len(sample)} arrays, the model {len(inputs)} inputs")
        for array, detail in zip(sample, inputs):
            if array.dtype != detail["dtype"] or tuple(array.shape) != tuple(detail["shape"]):
                raise ValueError(f"sample {i}: input {detail['name']} wants {np.dtype(detail['dtype']).name}"
                                 f"{[int(n) for n in detail['shape']]}, got {array.dtype.name}{list(array.shape)}")

    mark = os.getppid
    # The C++ Invoke itself: Interpreter.invoke() adds a Python-level safety check whose cost varies
    # by ~2 k instructions from call to call as CPython specialises it; an app does not pay it.
    invoke = getattr(getattr(interpreter, "_interpreter", None), "Invoke", None) or interpreter.invoke
    brackets = []  # one entry per pair of markers, in order: [kind, sample]
    os.makedirs(os.path.join(work, "outputs"), exist_ok=True)
    for i, sample in enumerate(samples):
        for array, detail in zip(sample, inputs):
            interpreter.set_tensor(detail["index"], array)
        count = job["invokes"] + (job["warmup"] if i == 0 else 0)
        for _ in range(count):
            mark()
            invoke()
            mark()
            brackets.append(["invoke", i])
        for k, detail in enumerate(outputs):
            np.save(os.path.join(work, "outputs", f"{i}_{k}.npy"), interpreter.get_tensor(detail["index"]))

    def describe(detail):
        return {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name,
                "shape": [int(n) for n in detail["shape"]]}

    if job.get("maps"):  # the guest's address space, for a profile's block addresses (exporter.arm.profile)
        with open("/proc/self/maps") as f, open(os.path.join(work, "maps.txt"), "w") as out:
            out.write(f.read())

    result = {"brackets": brackets, "inputs": [describe(d) for d in inputs],
              "outputs": [describe(d) for d in outputs]}
    with open(os.path.join(work, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as error:  # one line for the host to quote
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"guest error: {type(error).__name__}: {message}", file=sys.stderr)
        sys.exit(1)
