"""Data pipeline: shards -> ShardImages, split, augmentation, curriculum, SOS / CSV loaders.

``make_dataset`` (also used by test_vae_train) makes a small dataset with the real
generator, once per (size, n) per test session.
"""

import csv
import os
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import synthcount  # noqa: E402
from vae import data as vd  # noqa: E402
from vae.sos import load_labeled_csv, load_natural, load_sos, read_imgidx  # noqa: E402

_MADE = {}


def make_dataset(n: int = 48, size: int = 64, shard_size: int = 24, seed: int = 0) -> str:
    """A synthcount dataset of ``n`` images of ``size`` x ``size`` (cached per session)."""
    key = (n, size, shard_size, seed)
    if key not in _MADE:
        from synthcount.generate import generate_dataset

        root = os.path.join(tempfile.mkdtemp(prefix="vae-ds-"), "ds")
        cfg = synthcount.DatasetConfig(scene=synthcount.SceneConfig(size=(size, size)), num_images=n,
                                       shard_size=shard_size, seed=seed)
        generate_dataset(root, cfg, workers=1, progress=False)
        _MADE[key] = root
    return _MADE[key]


def write_images(root, n, rng, size=(30, 40)):
    """n small PNG files under root; returns their paths."""
    import cv2

    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(n):
        p = os.path.join(root, f"img{i:02d}.png")
        cv2.imwrite(p, rng.integers(0, 255, size + (3,), dtype=np.uint8))
        paths.append(p)
    return paths


def test_split_is_deterministic_disjoint_and_complete():
    tr, te = vd.split_indices(100, 0.1, 3)
    tr2, te2 = vd.split_indices(100, 0.1, 3)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert len(te) == 10 and len(tr) == 90
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(100))
    assert not np.array_equal(vd.split_indices(100, 0.1, 4)[1], te)
    assert len(vd.split_indices(2, 0.01, 0)[1]) == 1
    for bad in [dict(n=1, test_fraction=0.1, seed=0), dict(n=10, test_fraction=1.0, seed=0),
                dict(n=10, test_fraction=0.1, seed=-1)]:
        with pytest.raises(ValueError, match=next(iter(k for k in bad if k != "seed" or bad["seed"] < 0))):
            vd.split_indices(**bad)


def test_shard_images_eval_returns_the_stored_pixels_and_labels():
    path = make_dataset()
    ds = synthcount.open_dataset(path)
    idx = np.array([3, 30, 7])
    si = vd.ShardImages(path, idx)
    assert len(si) == 3 and si.image_size == (64, 64)
    x, lab = si[1]
    assert x.dtype == torch.float32 and x.shape == (3, 64, 64)
    assert torch.allclose(x, torch.from_numpy(ds[30]["image"]).permute(2, 0, 1).float() / 255.0, atol=1e-6, rtol=0)
    assert lab == {"count": int(ds[30]["count"]), "cumulative_area": int(ds[30]["cumulative_area"]), "index": 30}
    # Batched reads (DataLoader __getitems__) give the same samples as single reads.
    batch = si.__getitems__([2, 0, 1])
    for (xb, lb), i in zip(batch, [2, 0, 1]):
        xs, ls = si[i]
        assert torch.equal(xb, xs) and lb == ls
    loader = torch.utils.data.DataLoader(si, batch_size=3)
    xb, lb = next(iter(loader))
    assert xb.shape == (3, 3, 64, 64) and lb["index"].tolist() == [3, 30, 7]
    # Another model size: resized on the fly.
    small = vd.ShardImages(path, [0], image_size=(32, 32))
    assert small[0][0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="indices"):
        vd.ShardImages(path, [48])


def test_augmentation_only_in_train_mode_and_reproducible():
    path = make_dataset()
    ev = vd.ShardImages(path, [0, 1])
    tr = vd.ShardImages(path, [0, 1], train=True, seed=11)
    a = tr[0][0]
    assert a.shape == (3, 64, 64) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.equal(a, ev[0][0])
    assert torch.equal(ev[0][0], ev[0][0])                       # eval: no randomness
    tr.reseed(11)
    assert torch.equal(tr[0][0], a)                              # same seed, same augmentation
    tr.reseed(12)
    assert not torch.equal(tr[0][0], a)
    # The augmentation itself: a flip-only setting reproduces the mirrored image.
    img = synthcount.open_dataset(path)[0]["image"]
    rng = np.random.default_rng(0)
    out = vd.augment(img, (64, 64), rng, scale=1.0, color_shift=0.0)
    ref = img.astype(np.float32).transpose(2, 0, 1) / 255.0
    assert np.allclose(out, ref) or np.allclose(out, ref[:, :, ::-1])


def test_worker_augmentation_uses_torch_worker_seeds():
    path = make_dataset()
    tr = vd.ShardImages(path, [0] * 8, train=True)              # one image, eight augmentations

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(tr, batch_size=4, num_workers=2, generator=g)
        return torch.cat([x for x, _ in loader])

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Worker 0 made the first batch, worker 1 the second, from the same image: equal
    # batches would mean the workers share one random stream (the classic fork bug).
    assert not torch.equal(a[:4], a[4:])


def test_curriculum_share_drop_and_epoch_indices():
    assert [vd.natural_share(e, 2, 4) for e in range(7)] == [0, 0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [vd.natural_share(e, 2, 4, "step") for e in range(4)] == [0, 0, 1, 1]
    labels = np.array([1] * 50 + [0] * 20 + [2] * 10)
    kept = vd.balance_drop(labels, 0.1, np.random.default_rng(0))
    assert (labels[kept] == 1).sum() == 45 and (labels[kept] == 0).sum() == 20 and len(kept) == 75
    rows0 = vd.epoch_indices(0, 30, labels, seed=0, warmup=1, ramp=2)
    rows1 = vd.epoch_indices(1, 30, labels, seed=0, warmup=1, ramp=2)
    rows2 = vd.epoch_indices(2, 30, labels, seed=0, warmup=1, ramp=2)
    assert (rows0[:, 0] == 1).sum() == 0 and (rows0[:, 0] == 0).sum() == 30
    assert (rows1[:, 0] == 1).sum() == round(0.5 * 75)           # half of the 75 kept after the drop
    assert (rows2[:, 0] == 1).sum() == 75
    assert np.array_equal(rows1, vd.epoch_indices(1, 30, labels, seed=0, warmup=1, ramp=2))
    with pytest.raises(ValueError, match="fraction"):
        vd.balance_drop(labels, 1.0, np.random.default_rng(0))


def _write_v73(path, rows):
    """An SOS-like imgIdx.mat in MATLAB v7.3 layout: HDF5 behind a 512-byte user block,
    struct fields as (N, 1) columns of object references into #refs#."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        g = f.create_group("imgIdx")
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        cols = {k: [] for k in ("name", "label", "istest")}
        for i, (name, label, istest) in enumerate(rows):
            d = refs.create_dataset(f"n{i}", data=np.array([[ord(c)] for c in name], dtype=np.uint16))
            d.attrs["MATLAB_class"] = np.bytes_("char")
            cols["name"].append(d.ref)
            for k, v in (("label", label), ("istest", istest)):
                dv = refs.create_dataset(f"{k}{i}", data=np.array([[float(v)]]))
                dv.attrs["MATLAB_class"] = np.bytes_("double")
                cols[k].append(dv.ref)
        for k, v in cols.items():
            g.create_dataset(k, data=np.array(v, dtype=h5py.ref_dtype).reshape(-1, 1))
    with open(path, "r+b") as f:                                  # MATLAB's text header in the user block
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def test_sos_loader_v73_and_v5(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    root = tmp_path / "SOS"
    write_images(str(root / "img"), 4, rng)
    rows = [("img/img00.png", 0, 0), ("img/img01.png", 1, 0), ("img/img02.png", 4, 1), ("img/img03.png", 2, 0)]
    _write_v73(str(root / "imgIdx.mat"), rows)
    assert read_imgidx(str(root / "imgIdx.mat")) == rows
    sos = load_sos(str(root))
    assert [(os.path.relpath(p, root), lab) for p, lab in sos.train] == [("img/img00.png", 0), ("img/img01.png", 1),
                                                                        ("img/img03.png", 2)]
    assert [lab for _, lab in sos.test] == [4]
    # Older MAT version, same content, read with scipy.
    v5 = tmp_path / "SOS5"
    os.makedirs(v5)
    rec = np.zeros((1, 4), dtype=[("name", object), ("label", object), ("istest", object)])
    for i, (n, lab, t) in enumerate(rows):
        rec[0, i] = (n, float(lab), float(t))
    savemat(str(v5 / "imgIdx.mat"), {"imgIdx": rec})
    assert read_imgidx(str(v5 / "imgIdx.mat")) == rows
    # Natural images read through the dataset class at the model size.
    nat = vd.NaturalImages(sos.train, image_size=(32, 32))
    x, lab = nat[1]
    assert x.shape == (3, 32, 32) and lab == {"count": 1, "cumulative_area": -1, "index": 1}
    assert load_natural(str(root)).kind == "sos"
    (tmp_path / "bad.mat").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="bad.mat"):
        read_imgidx(str(tmp_path / "bad.mat"))


def test_labeled_csv_folder(tmp_path):
    rng = np.random.default_rng(1)
    write_images(str(tmp_path / "imgs"), 3, rng)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "count", "split"])
        w.writerows([["imgs/img00.png", 0, "train"], ["imgs/img01.png", 3, "test"], ["imgs/img02.png", 2, "train"]])
    ns = load_natural(str(tmp_path))
    assert ns.kind == "csv" and [lab for _, lab in ns.train] == [0, 2] and [lab for _, lab in ns.test] == [3]
    with open(tmp_path / "bad.csv", "w") as f:
        f.write("image,n\nimgs/img00.png,1\n")
    with pytest.raises(ValueError, match="header"):
        load_labeled_csv(str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="not found"):
        vd.NaturalImages([(str(tmp_path / "missing.png"), 1)])
