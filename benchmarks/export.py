"""Export speed: images/s of ``synthcount export`` per format, and the bytes written.

``python -m benchmarks.export [--quick] [--out FILE.json] [--images N] [--repeats R]``

One dataset is generated first (161x161, paper preset, t = 0.5, built-in assets, N
uniform in 0..4), then exported with ``export_dataset`` to every format in three
variants: PNG images; PNG plus ``points`` and a density map (sigma 4); JPEG images.
Each export runs ``repeats`` times into a fresh folder (median reported), after one
warm-up export per format (library imports); the time includes reading the shards,
checking their sha256, encoding, writing and fsyncing DEST. Single process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, List

from synthcount import preset
from synthcount.config import DatasetConfig
from synthcount.export import FORMATS, export_dataset
from synthcount.generate import generate_dataset

from ._common import emit, format_table, machine, measure, parser, rate

__all__ = ["main"]

VARIANTS = {"png": {}, "png+points+density": {"points": True, "density": 4.0}, "jpg": {"image_format": "jpg"}}


def _bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="images in the dataset (default 1000, quick 16)")
    p.add_argument("--repeats", type=int, default=None, help="runs per export (default 3, quick 1)")
    a = p.parse_args(argv)
    mach = machine()
    n = a.images or (16 if a.quick else 1000)
    repeats = a.repeats or (1 if a.quick else 3)
    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        src = os.path.join(tmp, "ds")
        cfg = DatasetConfig(scene=preset("paper", size=(161, 161), min_visible=0.5), num_images=n,
                            shard_size=min(n, 500))
        generate_dataset(src, cfg)
        for fmt in FORMATS:  # warm-up: library imports (datasets takes about a second) stay out of the clock
            export_dataset(src, os.path.join(tmp, f"warm-{fmt}"), fmt, limit=2)
        for fmt in FORMATS:
            for variant, kw in VARIANTS.items():
                dest = os.path.join(tmp, f"{fmt}-{variant}")

                def once():
                    shutil.rmtree(dest, ignore_errors=True)
                    return export_dataset(src, dest, fmt, **kw)

                m = measure(once, repeats)
                res = m["last"]
                rows.append({"format": fmt, "variant": variant, "images": n, "objects": res.num_objects,
                             "images_per_s": rate(n, m["wall_s"]), "cpu_images_per_s": rate(n, m["cpu_s"]),
                             "bytes_per_image": round(_bytes(dest) / n), "wall_runs_s": m["wall_runs"]})
                shutil.rmtree(dest, ignore_errors=True)
    result = {"benchmark": "export", "quick": a.quick, "machine": mach,
              "settings": {"size": [161, 161], "images": n, "repeats": repeats, "preset": "paper", "t": 0.5},
              "exports": rows}
    emit(result, [format_table(rows, ["format", "variant", "images_per_s", "cpu_images_per_s", "bytes_per_image"],
                               f"export of {n} images, 161x161 (medians of {repeats})")], a.out)


if __name__ == "__main__":
    main()
