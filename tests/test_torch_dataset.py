"""vae.counting.CountingDataset: count and detection targets, torchvision
transforms v2 moving boxes, masks and points together, DataLoader workers, indexing."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

import synthcount
from synthcount.config import DatasetConfig, SceneConfig
from vae.counting import CountingDataset, detection_collate

H, W = 40, 56


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("torchds") / "ds")
    synthcount.generate_dataset(out, DatasetConfig(num_images=24, shard_size=10, seed=2,
                                                   scene=SceneConfig(size=(H, W), mode="mixed", min_visible=0.5)))
    return out


def test_count_target_transforms_and_workers(path):
    ds = CountingDataset(path, transform=v2.ToDtype(torch.float32, scale=True), target_transform=lambda n: n * 10)
    raw = synthcount.open_dataset(path)
    assert len(ds) == 24
    x, y = ds[3]
    assert x.shape == (3, H, W) and x.dtype == torch.float32 and float(x.max()) <= 1.0
    np.testing.assert_allclose(x.numpy().transpose(1, 2, 0), raw[3]["image"] / 255.0, atol=1e-6)
    assert y == 10 * int(raw[3]["count"])
    plain = CountingDataset(path)
    img, n = plain[-1]
    assert img.dtype == torch.uint8 and n == int(raw[23]["count"])
    counts = torch.cat([b[1] for b in DataLoader(plain, batch_size=5, num_workers=2)])  # forked workers
    np.testing.assert_array_equal(counts.numpy(), raw.labels["count"])


def test_detection_target_matches_the_shard(path):
    ds = CountingDataset(path, target="detection")
    raw = synthcount.open_dataset(path)
    for i in range(len(ds)):
        img, t = ds[i]
        r = raw[i]
        n = int(r["count"])
        assert t["count"].item() == n and t["image_id"] == i and t["masks"].shape == (n, H, W)
        y0, x0, y1, x1 = r["object_boxes"][:n].T.astype(np.float32)
        np.testing.assert_array_equal(t["boxes"].numpy(), np.stack([x0, y0, x1, y1], 1).reshape(n, 4))
        np.testing.assert_array_equal(t["labels"].numpy(), r["object_ids"][:n] + 1)
        np.testing.assert_array_equal(t["area"].numpy(), r["object_areas"][:n])
        for k in range(n):
            np.testing.assert_array_equal(t["masks"][k].numpy(), r["label_map"] == k + 1)
        np.testing.assert_allclose(t["points"].numpy(), r["object_centroids"][:n, ::-1].reshape(n, 2), rtol=1e-6)
    assert ds.categories[:2] == raw.object_names[:2]


def _centroid_xy(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_transforms_v2_move_boxes_masks_and_points_together(path):
    joint = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.Pad([3, 5, 0, 0]), v2.RandomVerticalFlip(p=1.0)])
    ds = CountingDataset(path, target="detection", transforms=joint)
    seen = 0
    for i in range(len(ds)):
        img, t = ds[i]
        assert img.shape == (3, H + 5, W + 3)
        for k in range(int(t["count"])):
            m = t["masks"][k].numpy().astype(bool)
            ys, xs = np.nonzero(m)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_array_equal(t["boxes"][k].numpy(), box)  # still the mask's box
            np.testing.assert_allclose(t["points"][k].numpy(), _centroid_xy(m), atol=1e-3)  # still its centroid
            seen += 1
    assert seen > 10
    loader = DataLoader(ds, batch_size=4, collate_fn=detection_collate)
    imgs, targets = next(iter(loader))
    assert len(imgs) == len(targets) == 4 and "boxes" in targets[0]


def test_indexing_with_slices_or_lists_points_to_the_batch_api(path):
    ds = CountingDataset(path)
    for bad in (slice(1, 3), [1, 2], np.array([1]), torch.tensor([1, 2])):
        with pytest.raises(TypeError, match="Subset.*read_images"):
            ds[bad]
    assert ds[np.int64(2)][1] == ds[torch.tensor(2)][1]
    assert len(Subset(ds, [1, 2, 3])) == 3
    with pytest.raises(TypeError, match="read_images"):
        synthcount.open_dataset(path)[1:3]
    with pytest.raises(ValueError, match="target must be one of"):
        CountingDataset(path, target="boxes")


def test_the_old_module_name_says_where_the_datasets_went():
    import importlib

    with pytest.raises(ImportError, match="vae.counting"):
        importlib.import_module("synthcount.torch")
