"""Sources larger than memory: streamed packs and folders, incremental prepare (synthcount.stream)."""

import glob
import json
import os
import pickle

import h5py
import numpy as np
import pytest

from synthcount import sources
from synthcount.compose import Composer
from synthcount.config import DatasetConfig, SceneConfig, SourceConfig
from synthcount.generate import IDENTITY_FILE, generate_dataset
from synthcount.pack import load_pack
from synthcount.shards import verify_dataset
from synthcount.sources import PARTIAL_SUFFIX, load_backgrounds, load_objects, prepare
from synthcount.stream import LazyAssets, is_streamed, open_pack_stream


@pytest.fixture(scope="module")
def packs(msra_dir, sun_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("packs")
    prepare(msra_dir, str(d / "o.h5"), "objects", max_side=64)
    prepare(sun_dir, str(d / "b.h5"), "backgrounds")
    return str(d / "o.h5"), str(d / "b.h5")


def _shards(out):
    """(images + label maps bytes, sidecar digest) per shard."""
    res = []
    for f in sorted(glob.glob(os.path.join(out, "shard-*.h5"))):
        with h5py.File(f, "r") as g:
            pixels = g["images"][()].tobytes() + g["label_maps"][()].tobytes()
        res.append((pixels, open(f[:-3] + ".sha256").read().split()[0]))
    return res


def _cfg(objects, backgrounds, mode, n=24):
    return DatasetConfig(num_images=n, shard_size=8, scene=SceneConfig(size=(64, 64), max_count=3),
                         sources=SourceConfig(objects=objects, backgrounds=backgrounds, object_max_side=64,
                                              source_mode=mode))


def test_memory_and_stream_make_the_same_bytes(msra_dir, sun_dir, packs, tmp_path):
    """The same sources in memory or streamed (folder or pack, 1 or 2 workers): the
    same image and label bytes; for the same paths the same shard files (sidecars)
    and the same identity, so a run resumes across modes."""
    mem = _shards(generate_dataset(str(tmp_path / "mem"), _cfg(msra_dir, sun_dir, "memory")).out_dir)
    folder = _shards(generate_dataset(str(tmp_path / "sf"), _cfg(msra_dir, sun_dir, "stream"), workers=2).out_dir)
    assert len(mem) == 3 and folder == mem  # pixels and whole-file digests
    pk = generate_dataset(str(tmp_path / "sp"), _cfg(*packs, "stream"), workers=2).out_dir
    pm = generate_dataset(str(tmp_path / "pm"), _cfg(*packs, "memory")).out_dir
    assert [p for p, _ in _shards(pk)] == [p for p, _ in mem] and _shards(pk) == _shards(pm)
    ident = json.load(open(tmp_path / "mem" / IDENTITY_FILE))
    assert "source_mode" not in json.dumps(ident)
    # resume across modes: a piece in memory, the rest streamed, equals the one-go dataset
    out = str(tmp_path / "mixed")
    from synthcount.generate import plan_generation, run_plan

    run_plan(plan_generation(out, _cfg(msra_dir, sun_dir, "memory"), shards=(0, 1)))
    res = generate_dataset(out, _cfg(msra_dir, sun_dir, "stream"))
    assert res.shards_skipped == [0] and _shards(out) == mem and verify_dataset(out) == []


def test_stream_modes_load_nothing_up_front(msra_dir, sun_dir, packs, monkeypatch):
    o, b = packs
    so, sb = load_objects(o, mode="stream"), load_backgrounds(b, mode="stream")
    assert is_streamed(so.objects) and is_streamed(sb.backgrounds)
    mo, mb = load_objects(msra_dir, max_side=64), load_backgrounds(sun_dir)
    assert so.fingerprint() == mo.fingerprint() and sb.fingerprint() == mb.fingerprint()
    assert so.objects.loads == 0 and sb.backgrounds.loads == 0  # metadata only
    fo = load_objects(msra_dir, max_side=64, mode="stream")  # a folder: one scan, nothing kept
    assert fo.fingerprint() == mo.fingerprint() and fo.objects.names == [x.name for x in mo.objects]
    assert all((x.rgb == y.rgb).all() and (x.alpha == y.alpha).all() for x, y in zip(fo.objects, mo.objects))
    # auto: what fits stays in memory, what does not is streamed (never refused for size)
    assert not is_streamed(load_backgrounds(sun_dir, mode="auto").backgrounds)
    monkeypatch.setattr(sources, "mem_available", lambda: 1000)
    assert is_streamed(load_backgrounds(sun_dir, mode="auto").backgrounds)
    assert is_streamed(load_objects(o, mode="auto").objects)
    with pytest.raises(sources.SourceError, match="--source-mode stream"):
        load_backgrounds(b, mode="memory")
    with pytest.raises(ValueError, match="source_mode must be one of"):
        load_backgrounds(b, mode="disk")


def test_cache_is_bounded_and_composer_pickles(packs, tmp_path):
    item = np.zeros((10, 10, 3), np.uint8)  # 300 bytes
    seq = LazyAssets(50, lambda i: item + i, names=[str(i) for i in range(50)], meta={}, cache_bytes=1000)
    for i in list(range(50)) * 2:
        assert seq[i][0, 0, 0] == i
        assert seq._held <= 1000
    assert seq.loads == 100 and len(seq._cache) == 3  # LRU: each wraps round before it is reused
    assert seq[49] is seq[49] and seq.loads == 100
    # A streamed composer travels to Dask workers as paths, and makes the same image there.
    objs, bgs = open_pack_stream(packs[0]), open_pack_stream(packs[1])
    c = Composer(SceneConfig(size=(64, 64), max_count=3), objs, bgs)
    img, lab, _ = c.compose(3, 5)
    c2 = pickle.loads(pickle.dumps(c))
    assert len(pickle.dumps(c)) < 100_000
    img2, lab2, _ = c2.compose(3, 5)
    assert (img == img2).all() and (lab == lab2).all()
    m = Composer(SceneConfig(size=(64, 64), max_count=3), load_pack(packs[0]), load_pack(packs[1]))
    assert (m.compose(3, 5)[0] == img).all() and m.bg_prescale == c.bg_prescale
    # Staged (prescaled backgrounds and pyramids computed once into files): the same bytes.
    assert c.stage(str(tmp_path), images=3) == []  # fewer images than assets: not worth it
    assert c.stage(str(tmp_path), images=100, workers=2) == ["backgrounds", "objects"]
    assert len(os.listdir(tmp_path)) >= 2 and c._bg_small.loads == 0
    for i in range(12):
        a, b = c.compose(3, i), m.compose(3, i)
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert c._bg_small.loads > 0
    c.unstage()
    assert (c.compose(3, 5)[0] == img).all()


def test_prepare_resumes_after_an_interruption(sun_dir, tmp_path, monkeypatch):
    """Killed at file 4 with a checkpoint after every file: the rerun decodes only the
    files after the checkpoint and writes the same pack as one uninterrupted run."""
    whole = prepare(sun_dir, str(tmp_path / "whole.h5"), "backgrounds")
    out = str(tmp_path / "bg.h5")
    monkeypatch.setattr(sources, "CHECKPOINT_BYTES", 1)
    real, calls, armed = sources._decode_background, [], [True]

    def flaky(task):
        calls.append(task[1])
        if len(calls) == 4 and armed[0]:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(sources, "_decode_background", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(sun_dir, out, "backgrounds")
    assert os.path.exists(out + PARTIAL_SUFFIX) and not os.path.exists(out)
    with pytest.raises(ValueError, match="unfinished pack"):
        load_pack(out + PARTIAL_SUFFIX)
    with h5py.File(out + PARTIAL_SUFFIX, "r") as f:
        done = json.loads(bytes(f["state"][()]))["tasks_done"]
    assert done == 3
    calls.clear()
    armed[0] = False
    pack = prepare(sun_dir, out, "backgrounds")
    assert len(calls) == len([f for f in sources._walk(sun_dir) if sources._ext(f) in sources.IMAGE_EXT]) - done
    assert not os.path.exists(out + PARTIAL_SUFFIX)
    assert pack.fingerprint() == whole.fingerprint() == load_pack(out).fingerprint()
    assert json.load(open(out + ".report.json"))["skipped"] == json.load(open(str(tmp_path / "whole.h5.report.json"))
                                                                         )["skipped"]
    # another call (other classes) does not resume a partial file that is not its own
    calls.clear()
    armed[0] = True
    with pytest.raises(KeyboardInterrupt):
        prepare(sun_dir, out + "2", "backgrounds")
    monkeypatch.setattr(sources, "_decode_background", real)
    part = prepare(sun_dir, out + "2", "backgrounds", classes=("/g/grass",))
    assert part.background_names == load_backgrounds(sun_dir, classes=("/g/grass",)).background_names


def test_format_1_packs_still_read(msra_dir, tmp_path):
    """A pack written by synthcount before format 2 (names as JSON attributes, no
    stored fingerprint) loads and streams with the same fingerprint."""
    mem = load_objects(msra_dir, max_side=64)
    path = str(tmp_path / "v1.h5")
    with h5py.File(path, "w") as f:
        f.attrs["pack_format_version"] = 1
        f.attrs["source"] = "old"
        f.attrs["skipped"] = "[]"
        g = f.create_group("objects")
        g["rgb"] = np.concatenate([o.rgb.reshape(-1) for o in mem.objects])
        g["alpha"] = np.concatenate([o.alpha.reshape(-1) for o in mem.objects])
        g["rgb_shapes"] = np.array([o.rgb.shape for o in mem.objects], np.int64)
        g.attrs["names"] = json.dumps([o.name for o in mem.objects])
        g = f.create_group("backgrounds")
        g["rgb"] = np.zeros(0, np.uint8)
        g["rgb_shapes"] = np.zeros((0, 3), np.int64)
        g.attrs["names"] = "[]"
    assert load_pack(path).fingerprint() == mem.fingerprint() == open_pack_stream(path).fingerprint()
    assert list(open_pack_stream(path).objects.meta["footprints"]) == [
        int((o.alpha >= 128).sum()) for o in mem.objects]


def test_source_mode_is_a_config_field_left_out_of_the_dataset(tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    cfg = DatasetConfig.from_dict({"sources": {"source_mode": "stream"}})
    assert cfg.sources.source_mode == "stream" and "source_mode" not in cfg.to_json()
    assert DatasetConfig.from_json(cfg.to_json()) == DatasetConfig()  # how, not what: like workers
    with pytest.raises(ValueError, match="source_mode must be auto, memory or stream, got 'disk'"):
        DatasetConfig.from_dict({"sources": {"source_mode": "disk"}})
    r = CliRunner().invoke(main, ["generate", str(tmp_path / "d"), "--num-images", "2", "--source-mode", "disk"])
    assert r.exit_code == 2 and "--source-mode" in r.output
