"""``synthcount generate | prepare | inspect | preview | verify``: happy paths, exit codes, bad input."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from tests.fixtures import BAD_MSRA_REASONS


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


SMALL = ["--size", "48", "--num-images", "12", "--shard-size", "6", "--min-visible", "0.5", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory, msra_dir, sun_dir):
    out = tmp_path_factory.mktemp("cli") / "ds"
    r = _run("generate", out, *SMALL, "--objects", msra_dir, "--backgrounds", sun_dir, "--workers", "2")
    assert r.exit_code == 0, r.output
    assert "images/s" in r.output and "skipped source files: 0" in r.output
    return out


def test_inspect_preview_verify(made, tmp_path):
    r = _run("inspect", made, "--json")
    assert r.exit_code == 0
    s = json.loads(r.output)
    assert s["num_images"] == 12 and sum(s["count_histogram"].values()) == 12
    assert "corr_log_n_log_a" in s and len(s["shards"]) == 2
    r = _run("inspect", made)
    assert r.exit_code == 0 and "corr(log N, log A)" in r.output and "shard-00001.h5" in r.output
    png = tmp_path / "sheet.png"
    r = _run("preview", made, png, "--n", "9")
    assert r.exit_code == 0
    from PIL import Image

    im = Image.open(png)
    assert im.size[0] > 3 * 48 and np.asarray(im).std() > 0
    r = _run("verify", made)
    assert r.exit_code == 0 and "OK" in r.output


def test_verify_catches_corrupted_shard(made, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(made, bad)
    shard = bad / "shard-00001.h5"
    with h5py.File(shard, "r") as f:  # where image 3's bytes sit in the file
        off = f["images"].id.get_chunk_info(3).byte_offset
    with open(shard, "r+b") as fh:
        fh.seek(off + 100)
        b = fh.read(16)
        fh.seek(off + 100)
        fh.write(bytes(255 - x for x in b))
    r = _run("verify", bad)
    assert r.exit_code == 1 and "shard-00001.h5" in r.output and "sha256" in r.output
    # A single shard (no manifest to compare with): an edited label is caught from the pixels.
    one = tmp_path / "shard-00000.h5"
    shutil.copy(made / "shard-00000.h5", one)
    with h5py.File(one, "r+") as f:
        f["object_areas"][2, 0] += 1
    r = _run("verify", one)
    assert r.exit_code == 1 and "shard-00000.h5" in r.output and "image 2" in r.output


def test_resume_and_different_settings(made, msra_dir, sun_dir):
    before = {n: os.stat(made / n).st_mtime_ns for n in os.listdir(made) if n.endswith(".h5")}
    r = _run("generate", made, *SMALL, "--objects", msra_dir, "--backgrounds", sun_dir)
    assert r.exit_code == 0 and "(2 kept)" in r.output
    assert {n: os.stat(made / n).st_mtime_ns for n in before} == before
    r = _run("generate", made, *SMALL, "--objects", msra_dir, "--backgrounds", sun_dir, "--seed", "9")
    assert r.exit_code == 2 and "config.seed" in r.output and "--overwrite" in r.output
    assert "Traceback" not in r.output


def test_config_file_and_flags_override(tmp_path, msra_dir, sun_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_images: 5\nshard_size: 5\nseed: 7\nscene:\n  size: [40, 48]\n  max_count: 2\n"
                   f"sources:\n  objects: {msra_dir}\n  backgrounds: {sun_dir}\n")
    out = tmp_path / "fromfile"
    r = _run("generate", out, "--config", cfg, "--seed", "8", "--preset", "regression", "--quiet")
    assert r.exit_code == 0, r.output
    with h5py.File(out / "shard-00000.h5", "r") as f:
        c = json.loads(f.attrs["config"])
    assert c["seed"] == 8 and c["num_images"] == 5 and c["scene"]["size"] == [40, 48]
    assert c["scene"]["max_count"] == 2 and c["scene"]["ref_side_range"] == [0.3, 0.45]


def test_broken_source_files_are_skipped_and_reported(tmp_path, bad_msra_dir, sun_dir):
    out = tmp_path / "badsrc"
    r = _run("generate", out, *SMALL, "--objects", bad_msra_dir, "--backgrounds", sun_dir)
    assert r.exit_code == 0, r.output
    assert f"skipped source files: {len(BAD_MSRA_REASONS)}" in r.output
    assert "Imgs/truncated.jpg" in r.output
    assert _run("verify", out).exit_code == 0


@pytest.mark.parametrize("args, words", [
    (["--num-images", "-5"], "--num-images"),
    (["--num-images", "4", "--min-visible", "1.5"], "min_visible"),
    (["--num-images", "4", "--objects", "/no/such/folder"], "--objects"),
    (["--num-images", "4", "--preset", "nope"], "--preset"),
    (["--num-images", "4", "--shards", "3:5"], "shards"),
    (["--num-images", "4", "--size", "3"], "size"),
    (["--num-images", "4", "--mode", "both"], "--mode"),
    (["--seed", "1"], "--num-images"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, words):
    out = tmp_path / "never"
    r = _run("generate", out, "--quiet", *args)
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_objects_too_big_and_bad_sources_exit_2(tmp_path, msra_dir, sun_dir):
    cfg = tmp_path / "big.json"
    cfg.write_text(json.dumps({"num_images": 4, "scene": {"ref_side_range": [0.9, 1.0], "scale_jitter": [1.2, 1.3]}}))
    out = tmp_path / "never"
    r = _run("generate", out, "--config", cfg, "--objects", msra_dir, "--backgrounds", sun_dir, "--quiet")
    assert r.exit_code == 2 and "cannot fit" in r.output and not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run("generate", out, "--num-images", "4", "--objects", empty, "--backgrounds", sun_dir, "--quiet")
    assert r.exit_code == 2 and "Traceback" not in r.output and not out.exists()
    cfg.write_text(json.dumps({"num_images": 4, "colour": 3}))
    r = _run("generate", out, "--config", cfg, "--quiet")
    assert r.exit_code == 2 and "unknown" in r.output and not out.exists()


def test_prepare_writes_pack_used_by_generate(tmp_path, bad_msra_dir, sun_dir):
    pack = tmp_path / "objs.h5"
    r = _run("prepare", bad_msra_dir, pack, "--kind", "objects", "--max-side", "64", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"{len(BAD_MSRA_REASONS)} skipped" in r.output and (tmp_path / "objs.h5.report.json").exists()
    out = tmp_path / "frompack"
    r = _run("generate", out, *SMALL, "--objects", pack, "--backgrounds", sun_dir)
    assert r.exit_code == 0, r.output
    r = _run("prepare", tmp_path / "nope", pack, "--kind", "objects")
    assert r.exit_code == 2


@pytest.mark.parametrize("text, words", [
    ('{"num_images": 3, "scene": {"rotation_range": 5}}', "rotation_range"),
    ('{"num_images": 3, "scene": [1, 2]}', "scene"),
    ("num_images: 3\nscene:\n  max_count: true\n", "max_count"),
    ("num_images: 3\nseed: true\n", "seed"),
    ("num_images: 3\nscene:\n  min_visible: null\n", "min_visible"),
    ("num_images: 3\nsources:\n  background_classes: 5\n", "background_classes"),
    ("num_images: 3\nscene:\n  count_probs: 0.5\n", "count_probs"),
])
def test_wrongly_typed_config_values_exit_2_and_write_nothing(tmp_path, text, words):
    cfg = tmp_path / ("c.json" if text.startswith("{") else "c.yaml")
    cfg.write_text(text)
    out = tmp_path / "never"
    r = _run("generate", out, "--config", cfg, "--quiet")
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_flag_combinations_users_reach_for(tmp_path):
    # The README's --area-mode decorrelated at default sizes, and a preset with --max-count.
    assert _run("generate", tmp_path / "d", "--num-images", "6", "--area-mode", "decorrelated",
                "--quiet").exit_code == 0
    r = _run("generate", tmp_path / "b", "--num-images", "20", "--preset", "binary", "--max-count", "4", "--quiet")
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "b" / "shard-00000.h5", "r") as f:
        assert set(np.unique(f["count"][()])) <= {1, 2, 3, 4}
    # An image that can never be laid out fails the run (exit 1) and leaves no folder behind.
    r = _run("generate", tmp_path / "f", "--num-images", "5", "--size", "16", "--blend", "feather", "--quiet")
    assert r.exit_code in (1, 2) and not (tmp_path / "f").exists()


def test_verify_single_shard_uses_its_sidecar_and_catches_mixed_datasets(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run("generate", a, "--num-images", "6", "--shard-size", "3", "--size", "48", "--quiet").exit_code == 0
    assert _run("generate", b, "--num-images", "6", "--shard-size", "3", "--size", "40", "--seed", "5",
                "--quiet").exit_code == 0
    shard = a / "shard-00000.h5"
    with h5py.File(shard, "r") as f:
        off = f["images"].id.get_chunk_info(1).byte_offset
    with open(shard, "r+b") as fh:
        fh.seek(off + 50)
        byte = fh.read(1)
        fh.seek(off + 50)
        fh.write(bytes([byte[0] ^ 0xFF]))
    r = _run("verify", shard)
    assert r.exit_code == 1 and "shard-00000.h5" in r.output
    # A shard of another dataset dropped into a folder: a resume refuses to keep it
    # (exit 1 naming it), and verify names it.
    shutil.copy(b / "shard-00000.h5", a / "shard-00000.h5")
    shutil.copy(b / "shard-00000.sha256", a / "shard-00000.sha256")
    os.remove(a / "shard-00001.h5")
    os.remove(a / "shard-00001.sha256")
    r = _run("generate", a, "--num-images", "6", "--shard-size", "3", "--size", "48", "--quiet")
    assert r.exit_code == 1 and "shard-00000.h5" in r.output and "another config" in r.output
    assert not (a / "shard-00001.h5").exists()
    shutil.copy(b / "shard-00001.h5", a / "shard-00001.h5")
    shutil.copy(b / "shard-00001.sha256", a / "shard-00001.sha256")
    from synthcount.shards import write_manifest

    write_manifest(str(a), 2)
    r = _run("verify", a)
    assert r.exit_code == 1 and "differs from dataset.json" in r.output and "shard-00000.h5" in r.output


def test_out_dir_under_a_file_exits_2(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = _run("generate", tmp_path / "afile" / "ds", "--num-images", "3", "--quiet")
    assert r.exit_code == 2 and "cannot be created" in r.output
