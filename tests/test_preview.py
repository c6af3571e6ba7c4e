"""``preview``: each object's outline in its own colour, each tile captioned with the
global image index and the count."""

import numpy as np
from PIL import Image, ImageDraw

import synthcount
from synthcount.config import DatasetConfig, SceneConfig
from synthcount.stats import _PALETTE, _outline, preview


def test_outlines_per_object_and_index_captions(tmp_path):
    out = str(tmp_path / "ds")
    synthcount.generate_dataset(out, DatasetConfig(num_images=6, shard_size=6, seed=4,
                                                   scene=SceneConfig(size=(60, 90), mode="mixed")))
    ds = synthcount.open_dataset(out)
    png = str(tmp_path / "sheet.png")
    preview(ds, png, n=6, tile=None)  # every image, native size, in index order, 3 columns
    sheet = np.asarray(Image.open(png))
    pad, h, w, cols = 2, 60, 90, 3
    seen_labels = set()
    for t in range(6):
        r, c = divmod(t, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        tile = sheet[y:y + h, x:x + w]
        rec = ds[t]
        edge = _outline(rec["label_map"])
        edge[:14, :] = False  # under the caption
        for k in range(1, int(rec["count"]) + 1):
            mine = edge & (rec["label_map"] == k)
            if mine.any():
                assert (tile[mine] == _PALETTE[k - 1]).all(), (t, k)
                seen_labels.add(k)
        # The caption: "#<index> N=<count>" in white on black.
        text = f"#{int(rec['index'])} N={int(rec['count'])}"
        ref = Image.new("RGB", (w, h))
        d = ImageDraw.Draw(ref)
        d.rectangle([0, 0, 7 * len(text) + 4, 13], fill=(0, 0, 0))
        d.text((2, 1), text, fill=(255, 255, 255))
        box = np.asarray(ref)[:14, :7 * len(text) + 5]
        np.testing.assert_array_equal(tile[:14, :7 * len(text) + 5], box)
    assert len(seen_labels) >= 2  # several objects, several colours
