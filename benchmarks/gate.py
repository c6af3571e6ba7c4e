"""Cost of the readers' validation gate (issue 23) on a 2,000-image dataset.

``python -m benchmarks.gate [--quick] [--out FILE.json] [--images N] [--repeats R]``

One dataset (``--images`` 2,000 at ``--size`` 64x64 in shards of 200: the attack
report's ``base``) is read three ways, each with the gate (``Dataset._gate``:
:func:`synthcount.shards.check_schema` once per shard when it is first opened) and
with the gate replaced by a no-op, medians over ``--repeats``:

- ``open+labels``: ``open_dataset`` and the label table (what ``inspect`` reads);
- ``iterate``: every record in order (``iter_records``, what export reads);
- ``random``: 2,000 random ``ds[i]`` (what a DataLoader does), fresh Dataset.

Also timed: ``check_schema`` of one shard (per-shard cost), and the export's
pre-check of every shard (``export._common.check_checksums``: sha256 + schema +
label maps, what ``verify`` does less the image decode) against sha256 alone (the
check before issue 23), and a whole ``export --format webdataset`` for scale.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

import synthcount
from synthcount import reader
from synthcount.config import DatasetConfig, SceneConfig
from synthcount.generate import generate_dataset
from synthcount.shards import check_schema, read_manifest, sha256_file

from ._common import emit, format_table, machine, parser


def _median(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="image side (64: the attack report's base; 161: paper)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 1
    n = 400 if args.quick else args.images
    tmp = tempfile.mkdtemp(prefix="bench-gate-")
    path = os.path.join(tmp, "base")
    generate_dataset(path, DatasetConfig(num_images=n, shard_size=200, scene=SceneConfig(size=(args.size, args.size))),
                     progress=False)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, n, n)

    def open_labels():
        with synthcount.open_dataset(path) as ds:
            ds.labels

    def iterate():
        with synthcount.open_dataset(path) as ds:
            for _ in ds.iter_records():
                pass

    def random():
        with synthcount.open_dataset(path) as ds:
            for i in picks:
                ds[int(i)]

    real = reader.Dataset._gate

    def no_gate(self, f, k):
        self._checked.add(k)

    out = {"benchmark": "gate", "quick": args.quick, "images": n,
           "shards": n // 200, "image_size": [args.size, args.size], "repeats": args.repeats, "seconds": {}}
    for name, fn in (("open+labels", open_labels), ("iterate", iterate), ("random", random)):
        with_gate = _median(fn, args.repeats)
        reader.Dataset._gate = no_gate
        try:
            without = _median(fn, args.repeats)
        finally:
            reader.Dataset._gate = real
        out["seconds"][name] = {"gate": with_gate, "no_gate": without,
                                "gate_cost_percent": 100 * (with_gate - without) / without}
    import h5py

    first = os.path.join(path, "shard-00000.h5")
    with h5py.File(first, "r") as f:
        out["check_schema_ms_per_shard"] = 1000 * _median(lambda: check_schema(f, first, 200), 20)
    from synthcount.export._common import check_checksums

    with synthcount.open_dataset(path) as ds:
        out["export_precheck_s"] = _median(lambda: check_checksums(ds, 0, n), args.repeats)
        files = [os.path.join(path, e["file"]) for e in read_manifest(path)["shards"]]
        out["sha256_only_s"] = _median(lambda: [sha256_file(p) for p in files], args.repeats)
    from synthcount.export import export_dataset

    t0 = time.perf_counter()
    export_dataset(path, os.path.join(tmp, "wds"), "webdataset")
    out["export_webdataset_s"] = time.perf_counter() - t0
    out["machine"] = machine()
    table = format_table([{"read": k, "gate_s": v["gate"], "no_gate_s": v["no_gate"],
                           "gate_cost_percent": v["gate_cost_percent"]} for k, v in out["seconds"].items()],
                         ["read", "gate_s", "no_gate_s", "gate_cost_percent"], title=f"{n} images, medians")
    extra = format_table([{"check_schema_ms_per_shard": out["check_schema_ms_per_shard"],
                           "export_precheck_s": out["export_precheck_s"], "sha256_only_s": out["sha256_only_s"],
                           "export_webdataset_s": out["export_webdataset_s"]}],
                         ["check_schema_ms_per_shard", "export_precheck_s", "sha256_only_s", "export_webdataset_s"])
    emit(out, [table, extra], args.out)
    return out


if __name__ == "__main__":
    main()
