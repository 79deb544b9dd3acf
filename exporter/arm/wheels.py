"""The aarch64 wheels the ARM environment unpacks: the host's ai-edge-litert and its requirements at
the host's versions (kernels and instruction counts differ between LiteRT versions, so both sides
must run the same one). `make lock` writes them to locks/arm-aarch64.txt with
`python -m exporter.arm.wheels`; exporter/arm/setup_env.sh downloads exactly those."""

from __future__ import annotations

import importlib.metadata as md
import re


def pins() -> list[str]:
    dist = md.distribution("ai-edge-litert")
    out = [f"ai-edge-litert=={dist.version}"]
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        name = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return sorted(out, key=str.lower)


if __name__ == "__main__":
    print("\n".join(pins()))
