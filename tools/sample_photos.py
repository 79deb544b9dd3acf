"""A folder of plain photographs from the one real photograph an installed package ships
(matplotlib's grace_hopper.jpg): N square crops, every other one mirrored. What the README's and
docs/convert-from.md's `convert --from` figures were measured on, and what tests/test_convert_from.py
builds; your own photographs are better.

    python tools/sample_photos.py OUT_DIR [N]
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_crops(folder: Path, n: int = 14) -> Path:
    import matplotlib
    from PIL import Image

    source = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(source).convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    w, h = image.size
    for i in range(n):
        side = 280 + (i * 17) % 120
        x, y = (i * 37) % (w - side), (i * 53) % (h - side)
        crop = image.crop((x, y, x + side, y + side))
        (crop.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else crop).save(folder / f"photo{i:02d}.jpg", quality=95)
    return folder


if __name__ == "__main__":
    out = write_crops(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 14)
    print(f"wrote {out}")
