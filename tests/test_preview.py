"""``preview``: each target's outline in its own colour, distractors in white (dashed),
each tile captioned, on a strip above it, with the global image index and the count."""

import numpy as np
from PIL import Image, ImageDraw

import synthcount
from synthcount.config import DatasetConfig, SceneConfig
from synthcount.stats import _CAPTION_H, _DISTRACTOR_COLOUR, _PALETTE, _outline, preview


def test_outlines_per_object_and_index_captions(tmp_path):
    out = str(tmp_path / "ds")
    synthcount.generate_dataset(out, DatasetConfig(num_images=6, shard_size=6, seed=4,
                                                   scene=SceneConfig(size=(60, 90), mode="mixed",
                                                                     distractors=(0, 2))))
    ds = synthcount.open_dataset(out)
    png = str(tmp_path / "sheet.png")
    preview(ds, png, n=6, tile=None)  # every image, native size, in index order, 3 columns
    sheet = np.asarray(Image.open(png))
    pad, h, w, cols, cap = 2, 60, 90, 3, _CAPTION_H
    assert sheet.shape[:2] == (2 * (h + cap + pad) + pad, 3 * (w + pad) + pad)
    seen_labels, distractors = set(), 0
    for t in range(6):
        r, c = divmod(t, cols)
        y, x = pad + r * (h + cap + pad), pad + c * (w + pad)
        tile = sheet[y + cap:y + cap + h, x:x + w]  # the image, below its caption: every outline visible
        rec = ds[t]
        edge = _outline(rec["label_map"])
        n = int(rec["count"])
        for k in range(1, n + 1):
            mine = edge & (rec["label_map"] == k)
            if mine.any():
                assert (tile[mine] == _PALETTE[k - 1]).all(), (t, k)
                seen_labels.add(k)
        dis = edge & (rec["label_map"] > n)
        if dis.any():  # white or black (the dashes), never a target's colour
            px = tile[dis]
            assert np.all((px == _DISTRACTOR_COLOUR).all(axis=1) | (px == 0).all(axis=1)), t
            assert (px == _DISTRACTOR_COLOUR).all(axis=1).mean() > 0.3
            distractors += 1
        # The caption: "#<index> N=<count>[ +Kd]" in white on a black strip above the image.
        k = int(rec["num_distractors"])
        text = f"#{int(rec['index'])} N={n}" + (f" +{k}d" if k else "")
        ref = Image.new("RGB", (w, cap))
        ImageDraw.Draw(ref).text((2, 1), text, fill=(255, 255, 255))
        np.testing.assert_array_equal(sheet[y:y + cap, x:x + w], np.asarray(ref))
    assert len(seen_labels) >= 2 and distractors >= 1  # several objects, several colours
