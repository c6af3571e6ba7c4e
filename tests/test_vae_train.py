"""The training program: CLI end to end, exact resume, safe checkpoints, NaN stop,
Ctrl-C, and DistributedDataParallel on two CPU processes (gloo)."""

import csv
import json
import os
import socket
import time
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from cli.main import main  # noqa: E402
from tests.test_vae_data import make_dataset  # noqa: E402
from vae import train as vtrain  # noqa: E402
from vae.checkpoint import load_checkpoint, load_model  # noqa: E402
from vae.config import TrainConfig, model_preset  # noqa: E402
from vae.vgg import VGGFeatures, sha256_file  # noqa: E402

# A small, fast model: the tiny preset at 32x32 with 8 latent units.
SMALL = {"image_size": [32, 32], "latent_dim": 8}


def small_cfg(**kw):
    base = dict(preset="tiny", model_overrides=SMALL, epochs=2, batch_size=8, recon="pixel", workers=0,
                recon_every=0, seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def full_vgg(tmp_path_factory):
    """A vgg19-style state_dict file (random weights; real ones do not exist here)."""
    torch.manual_seed(0)
    feats = VGGFeatures()
    sd = {k: v for k, v in feats.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)
    path = str(tmp_path_factory.mktemp("vgg") / "vgg19-full.pth")
    torch.save(sd, path)
    return path


def _rows(run):
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_cli_train_end_to_end_with_perceptual_loss(tmp_path, full_vgg):
    ds = make_dataset()
    runner = CliRunner()
    slim = str(tmp_path / "vgg-slim.pth")
    r = runner.invoke(main, ["vae", "vgg-slim", full_vgg, slim])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["keys"] == 10 and os.path.getsize(slim) < 3_000_000
    run = str(tmp_path / "run")
    args = ["vae", "train", ds, run, "--preset", "tiny", "--image-size", "32", "--latent-dim", "8", "--epochs", "2",
            "--batch-size", "16", "--recon", "both", "--vgg-weights", slim, "--workers", "0", "--recon-every", "1",
            "--quiet", "--device", "cpu"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    for f in ("config.json", "metadata.json", "metrics.csv", "split.json", "checkpoints/init.pt",
              "checkpoints/last.pt", "recon/epoch-001.png", "recon/epoch-002.png"):
        assert os.path.isfile(os.path.join(run, f)), f
    rows = _rows(run)
    assert [int(r_["epoch"]) for r_ in rows] == [1, 2]
    assert list(rows[0])[:9] == ["epoch", "loss", "kl", "rec", "test_loss", "lr", "images_per_s", "data_s", "compute_s"]
    assert all(float(r_["images_per_s"]) > 0 and float(r_["lr"]) == 0.0015 for r_ in rows)
    meta = json.load(open(os.path.join(run, "metadata.json")))
    assert meta["recon"] == "both" and meta["vgg_weights"]["sha256"] == sha256_file(slim)
    assert meta["versions"]["torch"] == torch.__version__ and meta["device"] == "cpu"
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["model"]["image_size"] == [32, 32] and cfg["train"]["recon"] == "both"
    # Checkpoints: plain weights_only files; init = untrained weights, last = trained.
    st = torch.load(os.path.join(run, "checkpoints/last.pt"), weights_only=True)
    assert st["epoch"] == 2 and {"model", "optimizer", "scheduler", "rng", "config"} <= set(st)
    m_last, mcfg, info = load_model(run)
    m_init, _, info0 = load_model(run, "init")
    assert info["epoch"] == 2 and info0["epoch"] == 0 and mcfg.latent_dim == 8 and not m_last.training
    assert any(not torch.equal(a, b) for a, b in zip(m_last.state_dict().values(), m_init.state_dict().values()))
    assert load_model(run, 2)[2]["path"].endswith("last.pt")
    # --resume continues up to --epochs with the stored settings.
    r = runner.invoke(main, ["vae", "train", ds, run, "--epochs", "3", "--resume", "--quiet"])
    assert r.exit_code == 0, r.output
    assert [int(r_["epoch"]) for r_ in _rows(run)] == [1, 2, 3]
    assert len(json.load(open(os.path.join(run, "metadata.json")))["resumed"]) == 1
    # Refusals: an existing run without --resume; a resume that changes the science.
    r = runner.invoke(main, args)
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = runner.invoke(main, ["vae", "train", ds, run, "--epochs", "4", "--resume", "--beta", "0.1"])
    assert r.exit_code == 2 and "beta" in r.output


def test_missing_vgg_weights_stop_before_anything_is_written(tmp_path):
    ds = make_dataset()
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        r = CliRunner().invoke(main, ["vae", "train", ds, str(tmp_path / "run"), "--preset", "tiny", "--recon",
                                      "perceptual"])
    finally:
        torch.hub.set_dir(old)
    assert r.exit_code == 2 and "--vgg-weights PATH" in r.output and "Traceback" not in r.output
    assert not os.path.exists(tmp_path / "run")


def test_cpu_path_defaults_without_gpu_or_vgg_weights(tmp_path, monkeypatch):
    """No --preset and no --recon on a CPU without VGG weights: the tiny model and the
    pixel loss, said in one line (the README's CPU path), instead of a refusal."""
    ds = make_dataset()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        r = CliRunner().invoke(main, ["vae", "train", ds, str(tmp_path / "run"), "--image-size", "32",
                                      "--latent-dim", "8", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                                      "--quiet", "--recon-every", "0"], catch_exceptions=False)
    finally:
        torch.hub.set_dir(old)
    assert r.exit_code == 0, r.output
    note = [ln for ln in r.output.splitlines() if ln.startswith("vae train:")]
    assert len(note) == 1 and "--preset tiny" in note[0] and "--recon pixel" in note[0], r.output
    cfg = json.load(open(tmp_path / "run" / "config.json"))["train"]
    assert cfg["preset"] == "tiny" and cfg["recon"] == "pixel"


def test_random_vgg_is_loud_and_recorded(tmp_path):
    ds = make_dataset()
    run = str(tmp_path / "run")
    r = CliRunner().invoke(main, ["vae", "train", ds, run, "--preset", "tiny", "--image-size", "32", "--epochs", "1",
                                  "--vgg-weights", "random", "--workers", "0", "--quiet", "--recon-every", "0"])
    assert r.exit_code == 0, r.output
    assert "UNTRAINED VGG-19" in r.output
    vw = json.load(open(os.path.join(run, "metadata.json")))["vgg_weights"]
    assert vw["source"] == "random" and "UNTRAINED" in vw["warning"]


def test_resume_equals_an_uninterrupted_run(tmp_path):
    ds = make_dataset()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    vtrain.train(ds, a, small_cfg(epochs=3), progress=False)
    vtrain.train(ds, b, small_cfg(epochs=1), progress=False)
    vtrain.train(ds, b, small_cfg(epochs=3), resume=True, progress=False)
    sa, sb = load_checkpoint(os.path.join(a, "checkpoints/last.pt")), load_checkpoint(os.path.join(b,
                                                                                                   "checkpoints/last.pt"))
    assert sa["epoch"] == sb["epoch"] == 3
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert sa["scheduler"] == sb["scheduler"]
    keys = ("epoch", "loss", "kl", "rec", "test_loss", "lr")
    assert [[r_[k] for k in keys] for r_ in _rows(a)] == [[r_[k] for k in keys] for r_ in _rows(b)]
    # A run that is already complete has nothing to do.
    assert vtrain.train(ds, b, small_cfg(epochs=3), resume=True, progress=False)["status"] == "nothing to do"


def test_resume_with_another_worker_count_equals_an_uninterrupted_run(tmp_path):
    """Augmentation is seeded per sample, so DataLoader workers do not change the result."""
    ds = make_dataset()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    vtrain.train(ds, a, small_cfg(epochs=2, workers=0), progress=False)
    vtrain.train(ds, b, small_cfg(epochs=1, workers=0), progress=False)
    vtrain.train(ds, b, small_cfg(epochs=2, workers=2), resume=True, progress=False)
    sa, sb = load_checkpoint(os.path.join(a, "checkpoints/last.pt")), load_checkpoint(os.path.join(b,
                                                                                                   "checkpoints/last.pt"))
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        # Unpickling this would create the marker file: code execution.
        return (open, (self.path, "w"))


def test_a_malicious_checkpoint_does_not_execute(tmp_path):
    run = tmp_path / "run"
    os.makedirs(run / "checkpoints")
    marker = str(tmp_path / "pwned")
    torch.save({"format": "synthcount-vae-checkpoint", "model": _Marker(marker)}, str(run / "checkpoints/last.pt"))
    with pytest.raises(ValueError, match="refused to load"):
        load_model(str(run))
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(str(run / "checkpoints/last.pt"))
    assert not os.path.exists(marker)


def _patch_loss(monkeypatch, after_calls, action):
    """Make the training loss misbehave after ``after_calls`` calls."""
    calls = {"n": 0}

    class Faulty(vtrain.VAELoss):
        def forward(self, x, recon, mu, sigma):
            out = super().forward(x, recon, mu, sigma)
            calls["n"] += 1
            if calls["n"] > after_calls and torch.is_grad_enabled():
                if action == "nan":
                    out["loss"] = out["loss"] * float("nan")
                else:
                    raise KeyboardInterrupt
            return out

    monkeypatch.setattr(vtrain, "VAELoss", Faulty)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    ds = make_dataset()
    run = str(tmp_path / "run")
    # 43 training images / batch 8 = 6 steps, plus 1 test batch: epoch 1 = 7 calls.
    _patch_loss(monkeypatch, 9, "nan")
    r = CliRunner().invoke(main, ["vae", "train", ds, run, "--preset", "tiny", "--image-size", "32", "--epochs", "3",
                                  "--batch-size", "8", "--recon", "pixel", "--workers", "0", "--quiet"])
    assert r.exit_code == 1, r.output
    assert "loss became nan at epoch 2" in r.output and "last good checkpoint" in r.output
    assert load_checkpoint(os.path.join(run, "checkpoints/last.pt"))["epoch"] == 1
    assert [int(r_["epoch"]) for r_ in _rows(run)] == [1]


def test_ctrl_c_saves_a_checkpoint_first_and_resume_continues(tmp_path, monkeypatch):
    ds = make_dataset()
    run = str(tmp_path / "run")
    _patch_loss(monkeypatch, 9, "interrupt")
    with pytest.raises(KeyboardInterrupt):
        vtrain.train(ds, run, small_cfg(epochs=3), progress=False)
    st = load_checkpoint(os.path.join(run, "checkpoints/interrupted.pt"))
    assert st["interrupted"] is True and st["epoch"] == 1 and st["step"] == 2
    assert load_checkpoint(os.path.join(run, "checkpoints/last.pt"))["epoch"] == 1
    monkeypatch.undo()
    vtrain.train(ds, run, small_cfg(epochs=3), resume=True, progress=False)
    assert load_checkpoint(os.path.join(run, "checkpoints/last.pt"))["epoch"] == 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, ds, run, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    summary = vtrain.train(ds, run, small_cfg(epochs=1, batch_size=4, device="cpu"), progress=False)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({k: summary[k] for k in ("world_size", "best_test_loss", "status")}, f)


def test_ddp_two_cpu_processes_gloo(tmp_path):
    import torch.multiprocessing as mp

    ds = make_dataset()
    run = str(tmp_path / "run")
    mp.spawn(_ddp_worker, args=(2, _free_port(), ds, run, str(tmp_path)), nprocs=2, join=True)
    s0 = json.load(open(tmp_path / "rank0.json"))
    s1 = json.load(open(tmp_path / "rank1.json"))
    assert s0["world_size"] == s1["world_size"] == 2 and s0["status"] == "completed"
    assert s0["best_test_loss"] == s1["best_test_loss"]          # all-reduced over the ranks
    assert json.load(open(os.path.join(run, "metadata.json")))["world_size"] == 2
    assert [int(r_["epoch"]) for r_ in _rows(run)] == [1]
    assert load_checkpoint(os.path.join(run, "checkpoints/last.pt"))["epoch"] == 1


def test_natural_images_enter_after_the_warmup(tmp_path):
    import numpy as np

    from tests.test_vae_data import write_images

    ds = make_dataset()
    paths = write_images(str(tmp_path / "nat"), 8, np.random.default_rng(0))
    with open(tmp_path / "nat" / "labels.csv", "w") as f:
        f.write("file,count,split\n")
        for i, p in enumerate(paths):
            f.write(f"{os.path.basename(p)},{[1, 1, 1, 1, 2, 0, 3, 1][i]},{'test' if i == 7 else 'train'}\n")
    run = str(tmp_path / "run")
    vtrain.train(ds, run, small_cfg(epochs=3, natural=str(tmp_path / "nat"), warmup_epochs=1, natural_ramp=2),
                 progress=False)
    rows = _rows(run)
    # 7 training images, 4 of the most frequent class (1): 10% of 4 rounds to 0 dropped.
    assert [int(r_["natural_images"]) for r_ in rows] == [0, round(0.5 * 7), 7]
    assert [float(r_["natural_share"]) for r_ in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["test_loss_natural"] == "" and float(rows[2]["test_loss_natural"]) > 0
    nat = json.load(open(os.path.join(run, "metadata.json")))["natural"]
    assert nat["kind"] == "csv" and nat["train"] == 7 and nat["test"] == 1


def test_logged_losses_are_per_image_for_every_reduction():
    """``sum`` losses are batch sums: the epoch figures must not weight them by batch size again."""
    from vae.data import ShardImages
    from vae.losses import VAELoss
    from vae.model import VAE

    ds = ShardImages(make_dataset(), indices=np.arange(13), image_size=(32, 32))
    torch.manual_seed(0)
    cfg = small_cfg(batch_size=8)
    model = VAE(model_preset("tiny", **SMALL)).eval()
    out = {}
    for red in ("batch-mean", "sum"):
        c = small_cfg(batch_size=8, reduction=red)
        loss_fn = VAELoss(c.recon, c.pixel_loss, c.alpha, c.beta, c.reduction, None)
        run = SimpleNamespace(model=model, loss_fn=loss_fn, cfg=c, device=torch.device("cpu"), amp=False, rank=0,
                              world=1)
        out[red] = vtrain._evaluate(run, ds, 0)
    assert cfg.batch_size == 8  # batches of 8 and 5
    for k in ("loss", "kl", "rec"):
        assert out["sum"][k] == pytest.approx(out["batch-mean"][k], rel=1e-5), k


def test_resume_on_another_dataset_is_refused(tmp_path):
    run = str(tmp_path / "run")
    vtrain.train(make_dataset(), run, small_cfg(epochs=1), progress=False)
    with pytest.raises(ValueError, match="DATASET"):
        vtrain.train(make_dataset(n=36, shard_size=12), run, small_cfg(epochs=2), resume=True, progress=False)


def test_deadline_stops_after_whole_epochs(tmp_path):
    ds = make_dataset()
    run = str(tmp_path / "run")
    # A deadline already near: the first epoch runs whole, the next one would end after it.
    res = vtrain.train(ds, run, small_cfg(epochs=3, recon_every=2), progress=False, deadline=time.monotonic())
    assert res["stopped_early"] is True and res["epochs_run"] == 1 and res["epochs_done"] == 1
    assert res["status"] == "stopped early"
    assert [int(r_["epoch"]) for r_ in _rows(run)] == [1]
    assert load_checkpoint(os.path.join(run, "checkpoints/last.pt"))["epoch"] == 1
    assert os.path.isfile(os.path.join(run, "recon", "epoch-001.png"))
    # --resume continues; a far deadline changes nothing.
    res = vtrain.train(ds, run, small_cfg(epochs=3, recon_every=2), resume=True, progress=False,
                       deadline=time.monotonic() + 3600)
    assert res["stopped_early"] is False and res["epochs_run"] == 2 and res["epochs_done"] == 3
    assert res["status"] == "completed"
    assert [int(r_["epoch"]) for r_ in _rows(run)] == [1, 2, 3]


def test_one_run_per_run_dir(tmp_path):
    from synthcount.locks import FolderBusy, PathLock

    ds = make_dataset()
    run = str(tmp_path / "run")
    vtrain.train(ds, run, small_cfg(epochs=1), progress=False)
    before = {f: os.path.getmtime(os.path.join(run, f)) for f in ("config.json", "metrics.csv", "checkpoints/last.pt")}
    assert not os.path.exists(os.path.join(run, ".lock"))  # released and removed
    # A run still training holds RUN_DIR/.lock: a --resume (a requeued job, say) or a
    # new run into the same folder is refused and touches nothing.
    with PathLock(os.path.join(run, ".lock")):
        with pytest.raises(FolderBusy, match=f"in use by another training run \\(pid {os.getpid()}"):
            vtrain.train(ds, run, small_cfg(epochs=2), resume=True, progress=False)
        r = CliRunner().invoke(main, ["vae", "train", ds, run, "--resume", "--epochs", "2", "--quiet"])
        assert r.exit_code == 2 and "in use by another training run" in r.output and "Traceback" not in r.output
    assert before == {f: os.path.getmtime(os.path.join(run, f)) for f in before}
    # A lock file left behind by a dead holder (kill -9: the kernel dropped the lock) does not block.
    with open(os.path.join(run, ".lock"), "w") as f:
        f.write("pid 1 on elsewhere since 2026-01-01 00:00:00\n")
    assert vtrain.train(ds, run, small_cfg(epochs=2), resume=True, progress=False)["epochs_done"] == 2
    # Bad input into a new folder leaves no folder behind.
    fresh = str(tmp_path / "fresh")
    with pytest.raises(ValueError, match="at least 2 images"):
        vtrain.train(make_dataset(n=1, shard_size=1), fresh, small_cfg(epochs=1), progress=False)
    assert not os.path.exists(fresh)


def test_a_full_disk_while_training_exits_1_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from vae import checkpoint as ckpt

    ds = make_dataset()
    run = str(tmp_path / "run")
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *a, **k):  # init.pt, epoch 1's last.pt, then the disk is full
        calls["n"] += 1
        if calls["n"] >= 3:
            f.write(b"\0" * 1000)  # part of the file made it to disk
            raise OSError(28, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", save)
    r = CliRunner().invoke(main, ["vae", "train", ds, run, "--preset", "tiny", "--image-size", "32", "--latent-dim",
                                  "8", "--epochs", "3", "--batch-size", "8", "--recon", "pixel", "--workers", "0",
                                  "--recon-every", "0", "--quiet", "--device", "cpu"])
    assert r.exit_code == 1, r.output
    assert "last.pt" in r.output and "No space left on device" in r.output and "Traceback" not in r.output
    monkeypatch.setattr(ckpt.torch, "save", real)
    assert load_checkpoint(os.path.join(run, "checkpoints/last.pt"))["epoch"] == 1  # the old one, whole
    left = [n for _, _, files in os.walk(run) for n in files if ".tmp-" in n or n == ".lock"]
    assert left == []
    assert vtrain.train(ds, run, small_cfg(epochs=3, batch_size=8), resume=True, progress=False)["epochs_done"] == 3
