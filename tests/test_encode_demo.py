"""Encoding (shard dataset, SOS split), the analysis CLI, and the demo at a tiny scale."""

import json
import os

import cv2
import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
scipy_io = pytest.importorskip("scipy.io")

from click.testing import CliRunner  # noqa: E402

import synthcount  # noqa: E402
from cli.main import main  # noqa: E402
from synthcount.generate import generate_dataset  # noqa: E402
from vae.checkpoint import checkpoint_path, save_checkpoint  # noqa: E402
from vae.config import model_preset  # noqa: E402
from vae.encode import encode_dataset  # noqa: E402
from vae.model import VAE  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with init and last checkpoints of the tiny preset (no training needed)."""
    d = tmp_path_factory.mktemp("run")
    cfg = model_preset("tiny")
    torch.manual_seed(0)
    for which in ("init", "last"):
        m = VAE(cfg)
        save_checkpoint(checkpoint_path(str(d), which),
                        {"model": m.state_dict(), "epoch": 0 if which == "init" else 3,
                         "config": {"model": cfg.to_dict(), "train": {}}})
    return str(d)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("data") / "reg")
    cfg = synthcount.DatasetConfig(scene=synthcount.preset("regression", size=(64, 64)), num_images=60,
                                   shard_size=25, seed=3)
    generate_dataset(d, cfg, workers=1, progress=False)
    return d


def test_encode_shard_dataset(run_dir, shards, tmp_path):
    from vae.checkpoint import load_model

    out = tmp_path / "lat.h5"
    res = encode_dataset(run_dir, shards, str(out), which="last", batch_size=16, device="cpu", progress=False)
    assert res["num_images"] == 60 and res["epoch"] == 3
    ds = synthcount.open_dataset(shards)
    with h5py.File(out, "r") as f:
        assert f["mu"].shape == (60, 32) and f["mu"].dtype == np.float32 and f["sigma"].shape == (60, 32)
        assert (f["sigma"][()] > 0).all()
        assert np.array_equal(f["count"][()], ds.labels["count"])
        assert np.array_equal(f["cumulative_area"][()], ds.labels["cumulative_area"])
        assert np.array_equal(f["index"][()], np.arange(60))
        assert f.attrs["checkpoint"] == "last" and f.attrs["dataset"] == os.path.abspath(shards)
        mu7 = f["mu"][7]
    model, _, _ = load_model(run_dir, "last")
    x = torch.from_numpy(ds[7]["image"].transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
    with torch.no_grad():
        assert np.allclose(model.encode(x)[0][0].numpy(), mu7, atol=1e-5)  # batching changes nothing (eval mode)


def _sos_root(root):
    rows = [("img/a.png", 0, 0), ("img/b.png", 1, 0), ("img/c.png", 4, 0), ("img/d.png", 2, 1), ("img/e.png", 3, 1)]
    os.makedirs(root / "img")
    rng = np.random.default_rng(0)
    for name, _, _ in rows:
        cv2.imwrite(str(root / name), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    rec = np.zeros(len(rows), dtype=[("name", "O"), ("label", "O"), ("istest", "O")])
    for i, (n, lab, t) in enumerate(rows):
        rec[i] = (n, float(lab), float(t))
    scipy_io.savemat(str(root / "imgIdx.mat"), {"imgIdx": rec})
    return rows


def test_encode_sos_split(run_dir, tmp_path):
    rows = _sos_root(tmp_path / "sos")
    out = tmp_path / "sos_test.h5"
    res = encode_dataset(run_dir, str(tmp_path / "sos"), str(out), which="init", split="test", progress=False)
    assert res["num_images"] == 2 and res["data_kind"] == "sos" and res["epoch"] == 0
    with h5py.File(out, "r") as f:
        assert f["count"][()].tolist() == [2, 3]
        assert (f["cumulative_area"][()] == -1).all()  # unknown for natural images
        assert f["istest"][()].tolist() == [1, 1]
        assert [os.path.basename(n.decode()) for n in f["names"][()]] == ["d.png", "e.png"]
        assert f.attrs["split"] == "test"
    res = encode_dataset(run_dir, str(tmp_path / "sos"), str(tmp_path / "all.h5"), split="all", progress=False)
    with h5py.File(tmp_path / "all.h5", "r") as f:
        assert f["count"][()].tolist() == [r[1] for r in rows]
    with pytest.raises(ValueError, match="split"):
        encode_dataset(run_dir, str(tmp_path / "sos"), str(out), split="val", progress=False)


def test_analysis_cli(run_dir, shards, tmp_path):
    r = CliRunner()
    lat = str(tmp_path / "lat.h5")
    res = r.invoke(main, ["vae", "encode", run_dir, shards, lat, "--which", "init", "--batch-size", "32"])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["vae", "regress", lat, "--out", str(tmp_path / "reg"), "--permutations", "2",
                          "--log-n", "plus1"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "reg" / "regression.json").read_text())
    assert data["n_used"] == 60 and data["log_n"] == "plus1" and len(data["units"]) == 32
    res = r.invoke(main, ["vae", "probe", lat, lat, "--out", str(tmp_path / "probe"), "--max-epochs", "3"])
    assert res.exit_code == 0, res.output
    pj = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert len(pj["ap"]) == 5 and len(pj["logistic"]["ap"]) == 5 and "logistic regression" in res.output
    # bad input: exit 2 with one line, no traceback
    res = r.invoke(main, ["vae", "encode", run_dir, shards, lat, "--which", "best"])
    assert res.exit_code == 2 and "--which" in res.output
    with h5py.File(tmp_path / "noarea.h5", "w") as f:
        f["mu"] = np.zeros((5, 2), np.float32)
        f["count"] = np.arange(5)
    res = r.invoke(main, ["vae", "regress", str(tmp_path / "noarea.h5"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "cumulative_area" in res.output and "Traceback" not in res.output


def test_demo_quick_two_seeds_writes_every_file(tmp_path):
    from vae.demo import DemoConfig, run_demo

    out = tmp_path / "demo"
    res = run_demo(str(out), DemoConfig(quick=True, progress=False, seed=1, seeds=2))
    for suffix in ("", "_seed2"):  # the first study keeps the plain names, the second carries its seed
        for name in ("fig2_reconstructions.png", "fig3_traversal.png", "fig3_units.png", "latents_trained.h5",
                     "latents_untrained.h5"):
            stem, ext = name.rsplit(".", 1)
            assert (out / f"{stem}{suffix}.{ext}").stat().st_size > 0, (name, suffix)
        for rep in ("trained", "untrained", "pca"):
            for name in (f"probe_{rep}{suffix}.json", f"regression_{rep}{suffix}.json",
                         f"{rep}{suffix}_coefficients.png"):
                assert (out / name).stat().st_size > 0, name
        assert (out / f"run{suffix}" / "checkpoints" / "last.pt").is_file()
    for name in ("report.md", "demo.json", "table1.md"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "corr(log N, log A)" in report and "Permutation baseline" in report and "untrained" in report
    assert "pixel BCE loss" in report and "## Over seeds" in report and "every seed" in report
    for png in [line.split("](")[1].rstrip(")") for line in report.splitlines() if "![" in line]:
        assert (out / png).is_file(), png
    assert "logistic" in (out / "table1.md").read_text()
    # the first study's results under the keys a one-seed demo has always had
    assert res["training"]["epochs"] == 1
    assert set(res["results"]) == {"trained", "untrained", "pca"}
    assert {"ap_voc11", "mean_accuracy", "logistic"} <= set(res["results"]["trained"]["probe"])
    # per seed: units at both thresholds, the best candidate and the probes, for every representation
    assert [s["seed"] for s in res["per_seed"]] == [1, 2]
    for s in res["per_seed"]:
        for rep in ("trained", "untrained", "pca"):
            r = s["representations"][rep]
            assert set(r["numerosity_units"]) == {"0.05", "0.1"} and set(r["area_units"]) == {"0.05", "0.1"}
            assert set(r["numerosity_units"]["0.1"]) <= set(r["numerosity_units"]["0.05"])
            assert 0 <= r["probe"]["mlp_mean_accuracy"] <= 1 and 0 <= r["probe"]["logistic_mean_accuracy"] <= 1
    assert res["per_seed"][0]["representations"]["trained"]["numerosity_units"]["0.05"] == \
        res["results"]["trained"]["regression"]["numerosity_units"]
    sm = res["summary"]["representations"]["trained"]["mlp_mean_accuracy"]
    assert sm["min"] <= sm["mean"] <= sm["max"] and len(sm["values"]) == 2
    assert isinstance(res["summary"]["trained_beats_controls_every_seed"], bool)
    # issue 21's goal for the cut-out scene, per seed, from the same records
    assert res["summary"]["goal"] == "cutout"
    for c, s in zip(res["summary"]["checks"], res["per_seed"]):
        t = s["representations"]["trained"]
        assert c["trained_units_0.05"] == len(t["numerosity_units"]["0.05"])
        assert c["units_goal"] == (c["trained_units_0.05"] >= 1 and c["trained_units_0.05"] > c["untrained_units_0.05"]
                                   and c["best_numerosity_r2"] >= 0.06)
    # the paper's Fig. 3 for every seed: best number and area candidates from the mean code
    assert report.count("from -3 to +3 standard deviations") == 2
    assert "What was tried on this scene" in report  # the cut-out evidence, said plainly
    # the two studies are independent: different data
    assert res["per_seed"][0]["representations"] != res["per_seed"][1]["representations"]
    # a second demo into the same folder is refused (exit 2 from the CLI)
    r = CliRunner().invoke(main, ["demo", str(out), "--quick"])
    assert r.exit_code == 2 and "already holds a demo" in r.output


def test_demo_config_is_validated():
    from vae.demo import DemoConfig

    for bad in (dict(seeds=0), dict(minutes=0), dict(recipe="nope"), dict(scene="x"), dict(eval_images=10)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DemoConfig(**bad)
    assert DemoConfig(binary=True).recipe_name == "sz" and DemoConfig().recipe_name == "tiny-mean"
    from cli.demo import _RECIPES
    from vae.demo import RECIPES

    assert set(_RECIPES) == set(RECIPES)  # the CLI's list (no torch needed for --help) is the library's
    r = CliRunner().invoke(main, ["demo", "x", "--seeds", "0"])
    assert r.exit_code == 2 and "--seeds" in r.output


def test_study_seeds_are_independent_streams():
    from vae.demo import study_seed

    seeds = {study_seed(s, n) for s in range(4) for n in ("train-data", "eval-data", "probe-split")}
    assert len(seeds) == 12 and study_seed(0, "train-data") == study_seed(0, "train-data")


def test_demo_binary_uses_the_sz_recipe_and_reads_out_exact_counts(tmp_path):
    from vae.demo import RECIPES, run_demo

    res = run_demo(str(tmp_path / "demo"), quick=True, binary=True, progress=False)
    s = res["settings"]
    assert s["recipe"] == "sz" and s["model_preset"] == "sz" and s["recipe_settings"] == RECIPES["sz"]
    assert s["image_size"] == [48, 48]
    cfg = json.loads((tmp_path / "demo" / "run" / "config.json").read_text())
    assert cfg["model"]["enc_pool"] == "mean" and cfg["train"]["augment"] is True
    ex = res["results"]["trained"]["probe"]["exact_count"]
    assert ex["classes"] == sorted(ex["classes"]) and set(ex["classes"]) <= set(range(1, 9))
    assert ex["chance"] == 1 / len(ex["classes"]) and 0 <= ex["mean_accuracy"] <= 1
    assert "Exact count" in (tmp_path / "demo" / "report.md").read_text()
    # the number-sense hook: w, selective units and DeWind units for every representation, figures in the report
    ns = res["numbersense"][0]
    assert set(ns["representations"]) == {"trained", "untrained", "pca"}
    for r in ns["representations"].values():
        assert r["weber"]["w"] > 0 and 0 <= r["tuning"]["share_selective"] <= 1 and "n_units" in r["dewind"]
    rep = (tmp_path / "demo" / "report.md").read_text()
    assert "## Number sense" in rep and all((tmp_path / "demo" / f).is_file() for f in ns["figures"].values())
    assert all(f in rep for f in ns["figures"].values())


def test_an_interrupted_demo_is_named_and_a_running_one_is_not_disturbed(tmp_path):
    from synthcount.locks import FolderBusy, PathLock
    from vae.demo import run_demo

    out = tmp_path / "demo"
    (out / "run" / "checkpoints").mkdir(parents=True)  # what a demo killed while training leaves
    (out / "data").mkdir()
    r = CliRunner().invoke(main, ["demo", str(out), "--quick"])
    assert r.exit_code == 2 and "holds an interrupted demo (data, run; no report.md)" in r.output, r.output
    assert sorted(os.listdir(out)) == ["data", "run"]
    busy = tmp_path / "busy"
    busy.mkdir()
    with PathLock(str(busy / ".lock")):  # a demo running there
        with pytest.raises(FolderBusy, match=f"in use by another demo \\(pid {os.getpid()}"):
            run_demo(str(busy), quick=True, progress=False)
        assert sorted(os.listdir(busy)) == [".lock"]
    with pytest.raises(ValueError, match="seeds"):  # bad input into a new folder leaves no folder
        run_demo(str(tmp_path / "new"), quick=True, progress=False, seeds=0)
    assert not (tmp_path / "new").exists()
