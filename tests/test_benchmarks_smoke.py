"""Every benchmark runs with ``--quick`` and prints the JSON it promises.

Each runs as ``python -m benchmarks.NAME --quick`` in a subprocess (as CI and users
run them); the last stdout line must parse as one JSON object with the promised
keys and positive figures, the same object must land in ``--out``, and the
readable table goes to stderr. Speed is never asserted: the machine is shared.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name, tmp_path, *args):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", "--out", str(out), *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    assert res == json.loads(out.read_text())
    assert res["benchmark"] == name and res["quick"] is True
    m = res["machine"]
    assert m["cpu_model"] and m["logical_cores"] >= 1 and m["date"]
    assert "\n---" in p.stderr or "  ---" in p.stderr  # the readable table (its rule line)
    return res


def _positive(row, *keys):
    for k in keys:
        assert isinstance(row[k], (int, float)) and row[k] > 0, (k, row)


def test_generate(tmp_path):
    res = _run("generate", tmp_path)
    rows = res["synthcount"]
    got = {(r["size"], r["t"], r["compression"], r["workers"]) for r in rows}
    for t in (1.0, 0.5):
        for c in ("none", "lzf", "gzip"):
            assert (161, t, c, 1) in got
        assert (161, t, "none", 2) in got
    for r in rows + res["regression_preset"]:
        _positive(r, "images_per_s", "end_to_end_images_per_s", "cpu_images_per_s", "layouts_per_image",
                  "peak_rss_mb")
        assert r["maps_per_image"] >= 0 and r["shards"] >= 2 * r["workers"]
    assert {r["preset"] for r in res["regression_preset"]} == {"regression"}
    for s in res["scaling"]:
        _positive(s, "workers1_images_per_s", "workers2_images_per_s", "speedup")
    assert {b["t"] for b in res["baseline"]} == {1.0, 0.5}
    for b in res["baseline"]:
        assert b["images"] >= 1
        _positive(b, "images_per_s", "layouts_per_image")
    assert {r["t"] for r in res["ratios"]} == {1.0, 0.5}
    for r in res["ratios"]:
        _positive(r, "synthcount_images_per_s", "baseline_images_per_s", "ratio")


def test_baseline_alone(tmp_path):
    res = _run("baseline", tmp_path, "--t", "0.5")
    (b,) = res["baseline"]
    assert b["t"] == 0.5 and b["images"] >= 1
    _positive(b, "images_per_s", "cpu_images_per_s")


def test_placement(tmp_path):
    res = _run("placement", tmp_path)
    cells = res["cells"]
    for sp in ("paper", "regression"):
        for t in (1.0, 0.8, 0.5, 0.2):
            for n in (0, 1, 2, 4, 8, 16):
                (c,) = [c for c in cells if (c["preset"], c["t"], c["n"]) == (sp, t, n)]
                if c["status"] == "infeasible":
                    assert c["reason"]
                    continue
                _positive(c, "median_us", "mean_us", "images_per_s")
                assert 0.0 <= c["failure_rate"] <= 1.0
    # N = 0 never fails and needs exactly one layout.
    zero = [c for c in cells if c["n"] == 0]
    assert all(c["failure_rate"] == 0 and c["layouts_per_image"] == 1 for c in zero)


def test_floor(tmp_path):
    res = _run("floor", tmp_path)
    names = {f["floor"] for f in res["floors"]}
    assert {"copy_warm", "copy_fresh", "hdf5_none", "hdf5_lzf", "sha256"} <= names
    for f in res["floors"]:
        _positive(f, "images_per_s")
    assert {(f["t"], f["compression"]) for f in res["fractions"]} == {(1.0, "none"), (1.0, "lzf"), (0.5, "none"),
                                                                       (0.5, "lzf")}
    for f in res["fractions"]:
        _positive(f, "synthcount_images_per_s", "floor_images_per_s", "fraction_of_floor")


def test_load(tmp_path):
    res = _run("load", tmp_path)
    got = {(r["source"], r["workers"]) for r in res["loaders"]}
    for w in (0, 2):
        assert ("shards (none)", w) in got and ("jpeg folder", w) in got
    for r in res["loaders"]:
        _positive(r, "images_per_s", "cpu_images_per_s")
    for r in res["ratios"]:
        _positive(r, "ratio")
    for g in res["gpu_budget_estimate"]:
        assert g["preset"] == "paper"
        _positive(g, "training_gflops_per_image", "estimated_gpu_images_per_s", "assumed_gpu_tflops")


def test_train(tmp_path):
    res = _run("train", tmp_path)
    rows = {r["preset"]: r for r in res["presets"]}
    assert set(rows) == {"tiny", "paper"}
    for r in rows.values():
        assert r["recon"] == "pixel" and r["vgg_weights"].startswith("none")
        _positive(r, "images_per_s", "data_s_per_step", "compute_s_per_step", "peak_rss_mb", "training_flops",
                  "parameters")
    assert rows["paper"]["parameters"] > rows["tiny"]["parameters"]


def test_scale(tmp_path):
    res = _run("scale", tmp_path, "--presets", "regression,binary", "--workers", "1")
    assert res["all_completed"] is True and len(res["runs"]) == 2
    for r in res["runs"]:
        assert r["completed"] and r["images"] == 600 and r["layout_budget"] >= 1
        assert 0 < r["most_layouts_share_of_budget"] <= 1
        assert all(set(v) == {"mean", "p99", "max"} for v in r["layouts_by_n"].values())


def test_export(tmp_path):
    res = _run("export", tmp_path)
    got = {(r["format"], r["variant"]) for r in res["exports"]}
    assert got == {(f, v) for f in ("coco", "webdataset", "hf", "imagefolder")
                   for v in ("png", "png+points+density", "jpg")}
    for r in res["exports"]:
        _positive(r, "images_per_s", "cpu_images_per_s", "bytes_per_image")
        assert r["images"] == res["settings"]["images"]


def test_labels(tmp_path):
    res = _run("labels", tmp_path)
    assert {r["filter"] for r in res["filters"]} == {"none", "lzf", "gzip-1", "gzip-2", "gzip-3", "gzip-4", "gzip-6"}
    for r in res["filters"]:
        _positive(r, "write_images_per_s", "read_images_per_s", "bytes_per_map")
    lzf, gz = res["generation"]
    assert (lzf["label_compression"], gz["label_compression"]) == ("lzf", "gzip")
    assert gz["gzip_level"] == res["settings"]["label_gzip_level"] and "cost_vs_lzf" in gz
    for r in (lzf, gz):
        _positive(r, "images_per_s", "label_bytes_per_image")


def test_versus(tmp_path):
    # The tree against itself (CI has no other version at hand): the machinery, not the figures.
    res = _run("versus", tmp_path, "--reference", ROOT, "--images", "8")
    assert res["floor_images_per_s"] > 0 and len(res["runs"]) == 8
    for r in res["runs"]:
        assert not r["errors"] and r["images_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert (r["paired_speedup"] > 0) if r["tree"] == "this" else ("paired_speedup" not in r)


def test_budget(tmp_path):
    res = _run("budget", tmp_path, "--images", "10")
    assert [(r["assets"], r["t"]) for r in res["runs"]] == [("builtin", 0.5), ("builtin", 1.0), ("fixtures", 0.5),
                                                            ("fixtures", 1.0)]
    for r in res["runs"]:
        _positive(r, "images_per_s", "us_per_image", "required_us_per_image", "ceiling_images_per_s")
        assert "remap" in r["opencv_us_per_image"]  # the wrapped calls were timed
        # what the required calls take is part of the image's time, so the ceiling lies above the rate
        assert r["ceiling_images_per_s"] > r["images_per_s"]


def test_distractors(tmp_path):
    res = _run("distractors", tmp_path)
    assert res["surveys"][0]["answer"].startswith("admitted") and res["surveys"][0]["cpu_s"] > 0
    r = res["runs"][0]
    assert r["distractors"] == "1:3" and r["failed"] == 0 and r["images_written"] == 40
    _positive(r, "images_per_s_cpu", "layout_budget", "most_layouts")


# load and train import torch before parsing (seconds each); the parser is the same helper.
@pytest.mark.parametrize("name", ["generate", "placement", "floor", "baseline", "scale", "export", "labels", "versus",
                                  "budget"])
def test_bad_flag_exits_2(name):
    p = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--no-such-flag"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "usage" in p.stderr.lower() and "Traceback" not in p.stderr


def test_dask_engine(tmp_path):
    pytest.importorskip("distributed")
    res = _run("dask_engine", tmp_path, "--dask", "local:2", "--images", "48")
    assert [r["workers"] for r in res["modes"]] == [1, 2, 2] and res["same_bytes"] is True
    for r in res["modes"]:
        _positive(r, "images_per_s", "end_to_end_images_per_s")
    _positive(res["ratios"], "dask_vs_pool", "dask_vs_one_process")
    # The packs travel once per worker; a task carries its index and the job's key only.
    assert res["job_bytes"] > 1_000_000 and 0 < res["task_bytes"] < 20_000


# ---------------------------------------------------------------- benchmarks.gpu (needs CUDA; CPU: exit or smoke)

def test_gpu_without_cuda_exits_2_with_one_line(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--out", str(tmp_path / "gpu.json")], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "benchmarks.gpu: no CUDA device (torch.cuda.is_available() is False); this check needs a GPU "
        "(--device cpu runs a logic smoke test only)"]
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_cpu_logic_smoke(tmp_path):
    # The whole script but the CUDA calls and torchrun, at 64x64 with 2 steps: figures meaningless.
    out = tmp_path / "gpu.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--images", "32", "--steps", "2",
                        "--amp-steps", "2", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res == json.loads(out.read_text())
    assert res["benchmark"] == "gpu" and res["smoke_test_only"] is True
    assert set(res) >= {"machine", "device", "settings", "generation", "throughput", "amp_agreement", "ddp",
                        "projection_paper_140x80000", "total_wall_s"}
    assert res["settings"]["vgg_weights"] == "random (speed check only)" and res["settings"]["recon"] == "perceptual"
    assert res["settings"]["image_size"] == [64, 64] and res["device"]["torch"]
    t = res["throughput"]
    _positive(t, "images_per_s", "compute_images_per_s", "parameters", "median_step_s")
    assert 0 <= t["data_wait_fraction"] < 1 and t["steps_timed"] == 2
    a = res["amp_agreement"]
    assert a["steps"] == 2 and len(a["loss_fp32"]) == len(a["loss_bf16"]) == len(a["relative_difference"]) == 2
    assert a["relative_difference_step1"] < 0.05  # same weights, same batch, same noise: only rounding differs
    assert res["ddp"]["status"] == "skipped" and res["ddp"]["reason"]
    pr = res["projection_paper_140x80000"]
    assert pr["epochs"] == 140 and pr["images_per_epoch"] == 80000
    assert abs(pr["hours"] * 3600 * pr["images_per_s"] - 140 * 80000) < 1e-3 * 140 * 80000
    assert "[gpu-check" in p.stderr


def test_emergence(tmp_path):
    res = _run("emergence", tmp_path, "--data", str(tmp_path / "data"), "--set", "preset=sz")
    assert res["train_config"]["preset"] == "sz" and len(res["epochs"]) == 1
    for rep in ("trained", "untrained", "pca"):
        units = res["final"][rep]["units"]
        assert set(units) == {"r2_0.05", "r2_0.1"} and 0 <= res["final"][rep]["linear_probe"] <= 1
    assert {"mu", "sample", "mu_1000", "mu_pixsum"} <= set(res["epochs"][0])
    table = subprocess.run([sys.executable, "-m", "benchmarks.emergence", "--table", str(tmp_path / "emergence.json")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 3, table.stderr  # head, rule, row


def test_stream(tmp_path):
    res = _run("stream", tmp_path, "--root", str(tmp_path / "trees"), "--backgrounds", "24", "--objects", "8",
               "--images", "40", "--workers", "1")
    assert res["backgrounds"] == 24 and res["objects"] == 8 and res["same_bytes"] is True
    assert {p["kind"]: p["files"] for p in res["prepare"]} == {"backgrounds": 24, "objects": 8}
    for p in res["prepare"]:
        _positive(p, "seconds", "files_per_s", "parent_peak_rss_mb", "pack_mb")
    assert {(r["mode"], r["workers"]) for r in res["runs"]} == {("memory", 1), ("stream", 1)}
    for r in res["runs"]:
        _positive(r, "images_per_s", "cpu_images_per_s", "plan_s", "parent_peak_rss_mb", "worker_peak_rss_mb")
    assert [s["workers"] for s in res["stream_vs_memory"]] == [1] and res["stream_vs_memory"][0]["cpu_ratio"] > 0
    assert [r["staged"] for r in res["runs"]] == [[], ["backgrounds", "objects"]]  # 40 images > 24, 8 assets


def test_emergence_on_the_cut_out_scene(tmp_path):
    res = _run("emergence", tmp_path, "--data", str(tmp_path / "data"), "--preset", "regression",
               "--set", "model.enc_pool=mean")
    assert res["preset"] == "regression" and res["train_config"]["model_overrides"]["enc_pool"] == "mean"
    for rep in ("trained", "untrained", "pca"):
        f = res["final"][rep]
        assert {"units", "units_plus1", "units_sample", "units_pixsum"} <= set(f)
        assert 0 <= f["table1_probe"]["mlp"] <= 1 and 0 <= f["table1_probe"]["logistic"] <= 1
    # the seed table groups ROW_s{SEED}.json files into one row per factor
    text = (tmp_path / "emergence.json").read_text()
    files = [tmp_path / f"row_s{s}.json" for s in (100, 101)]
    for f in files:
        f.write_text(text)
    table = subprocess.run([sys.executable, "-m", "benchmarks.emergence", "--seed-table", *map(str, files)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip().splitlines()
    assert len(table) == 3 and table[2].startswith("| row | regression: model.enc_pool=mean | 0, 0 |"), table
