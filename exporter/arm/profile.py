"""Where the instructions of one inference go on an emulated ARM core: per function.

    python -m exporter.arm.profile FILE.tflite [--core cortex-a76] [--top 25]

The instruction-counting plugin's optional block profile (icount.c, `hist=`) counts every
translated block's executions during one steady invoke (the second of the sample's invokes,
after a warm-up); the guest writes its /proc/self/maps, and each block address is mapped to the
shared object and the function (the LiteRT .so files carry their full symbol tables: XNNPACK
micro-kernels `xnn_qs8_...`, TFLite reference kernels `tflite::ops::builtin::...`). Its totals
equal `arm_cost`'s count of that invoke (same plugin, same window). Input: zeros in the file's
dtype unless given (the kernels' instruction counts do not depend on the pixel values, except
for a few data-dependent loops).
"""

from __future__ import annotations

import argparse
import bisect
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from exporter.arm import env as arm_env
from exporter.arm.runner import _as_arrays, _emulate


@dataclass
class Profile:
    core: str
    instructions: int  # in the profiled invoke (sum over blocks)
    functions: list  # (instructions, object, symbol), most first

    def table(self, top: int = 25) -> str:
        lines = [f"{self.instructions:,} instructions in one invoke on {self.core}"]
        for count, obj, sym in self.functions[:top]:
            lines.append(f"{count:>13,} {100 * count / max(self.instructions, 1):5.1f}%  {Path(obj).name}: {sym[:110]}")
        return "\n".join(lines)

    def grouped(self, patterns: dict[str, str]) -> dict[str, int]:
        """Instructions per group: the first regular expression (searched in the symbol) that matches."""
        out: dict[str, int] = defaultdict(int)
        for count, _obj, sym in self.functions:
            for name, pattern in patterns.items():
                if re.search(pattern, sym):
                    out[name] += count
                    break
            else:
                out["other"] += count
        return dict(out)


def default_input(path: Path) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_input_details()
    return [np.zeros(d["shape"], d["dtype"]) for d in details]


def profile(path, inputs=None, core: str = "cortex-a76", timeout: float = 900) -> Profile:
    path = Path(path)
    sample = _as_arrays(inputs) if inputs is not None else default_input(path)
    # Markers: 0,1 the warm-up invoke; 2,3 the first steady one (profiled); 4,5 the second.
    emulated = _emulate(path, [sample], core, invokes=2, warmup=1, timeout=timeout,
                        plugin_args=("hist={work}/hist.txt", "hist_from=2", "hist_to=3"),
                        job_extra={"maps": True}, keep=("hist.txt", "maps.txt"))
    counts: dict[int, int] = defaultdict(int)
    for line in emulated["files"]["hist.txt"].splitlines():
        vaddr, n, executions = line.split()
        counts[int(vaddr, 16)] += int(n) * int(executions)
    maps = _maps(emulated["files"]["maps.txt"])
    starts = [m[0] for m in maps]
    per_function: dict[tuple[str, str], int] = defaultdict(int)
    for address, count in counts.items():
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or address >= maps[i][1] or not maps[i][3].startswith("/"):
            per_function[("?", f"{address:#x}")] += count
            continue
        start, _end, offset, obj = maps[i]
        per_function[(obj, _symbol(obj, address - start + offset))] += count
    functions = sorted(((c, obj, sym) for (obj, sym), c in per_function.items()), reverse=True)
    return Profile(core=core, instructions=sum(counts.values()), functions=functions)


def _maps(text: str) -> list[tuple[int, int, int, str]]:
    rows = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        rows.append((lo, hi, int(parts[2], 16), parts[5].strip() if len(parts) > 5 else ""))
    return sorted(rows)


@lru_cache(maxsize=None)
def _elf(obj: str):
    """(PT_LOAD segments as (offset, filesz, vaddr), sorted symbol addresses, names) of a file."""
    segments = []
    try:
        headers = subprocess.run(["readelf", "-lW", obj], capture_output=True, text=True, check=True).stdout
        symbols = subprocess.run(["nm", "-C", "--defined-only", obj], capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [], [], []
    for line in headers.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            segments.append((int(parts[1], 16), int(parts[4], 16), int(parts[2], 16)))
    table = []
    for line in symbols.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwWi" and not parts[2].startswith("$"):
            table.append((int(parts[0], 16), parts[2]))
    table.sort()
    return segments, [a for a, _ in table], [n for _, n in table]


def _symbol(obj: str, file_offset: int) -> str:
    segments, addresses, names = _elf(obj)
    vaddr = None
    for offset, size, base in segments:
        if offset <= file_offset < offset + size:
            vaddr = file_offset - offset + base
    if vaddr is None or not addresses:
        return f"+{file_offset:#x}"
    i = bisect.bisect_right(addresses, vaddr) - 1
    return names[i] if i >= 0 else f"+{file_offset:#x}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--core", default="cortex-a76", choices=arm_env.CORES)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(profile(args.model, core=args.core).table(args.top))


if __name__ == "__main__":
    main()
