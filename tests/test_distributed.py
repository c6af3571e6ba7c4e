"""Generation on a Dask cluster (``generate --dask``, ``generate_dataset(client=...)``):
the same bytes as one process, resume, pieces, a worker killed mid-write, an
unreachable scheduler, a missing extra, and an OUT_DIR the workers cannot share.

The cluster is a LocalCluster of two worker processes on 127.0.0.1 (one for the
module); the OUT_DIR cases start a worker in its own mount namespace (``unshare``),
where OUT_DIR's parent is an empty tmpfs or an overlay whose writes the client never
sees.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

distributed = pytest.importorskip("distributed")  # the [dask] extra; [dev] installs it

from cli.main import main  # noqa: E402
from synthcount import distributed as sd  # noqa: E402
from synthcount.config import DatasetConfig, SceneConfig, SourceConfig  # noqa: E402
from synthcount.generate import generate_dataset  # noqa: E402
from synthcount.shards import verify_dataset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(msra_dir, sun_dir, **kw):
    base = dict(scene=SceneConfig(size=(64, 64), min_visible=0.5),
                sources=SourceConfig(objects=msra_dir, backgrounds=sun_dir), num_images=60, shard_size=10, seed=3)
    base.update(kw)
    return DatasetConfig(**base)


CLI_FLAGS = ["--size", "64", "--min-visible", "0.5", "--num-images", "60", "--shard-size", "10", "--seed", "3"]


def _hashes(folder):
    man = json.load(open(os.path.join(folder, "manifest.json")))
    return man["num_images"], [(s["file"], s["num_images"], s["sha256"]) for s in man["shards"]]


def _leftovers(folder):
    """Temporary and probe files: a finished run leaves none."""
    return [n for n in os.listdir(folder) if ".tmp-" in n or n.startswith(sd.PROBE_PREFIX)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, msra_dir, sun_dir):
    out = str(tmp_path_factory.mktemp("dask") / "ref")
    generate_dataset(out, _cfg(msra_dir, sun_dir), progress=False)
    return out


@pytest.fixture(scope="module")
def client():
    c, cluster = sd.connect("local:2")
    c.wait_for_workers(2, timeout=120)
    yield c
    sd.close(c, cluster)


def test_same_bytes_as_one_process_and_resume(reference, client, tmp_path, msra_dir, sun_dir):
    out = str(tmp_path / "d")
    res = generate_dataset(out, _cfg(msra_dir, sun_dir), client=client, progress=False)
    assert res.shards_made == list(range(6)) and res.complete and res.images_written == 60
    assert _hashes(out) == _hashes(reference) and verify_dataset(out) == [] and not _leftovers(out)
    # Resume: only the missing shards are made, the others are kept untouched.
    for k in (1, 4):
        os.remove(os.path.join(out, f"shard-0000{k}.h5"))
        os.remove(os.path.join(out, f"shard-0000{k}.sha256"))
    kept = os.stat(os.path.join(out, "shard-00002.h5")).st_mtime_ns
    res = generate_dataset(out, _cfg(msra_dir, sun_dir), client=client, progress=False)
    assert res.shards_made == [1, 4] and res.shards_skipped == [0, 2, 3, 5] and res.complete
    assert os.stat(os.path.join(out, "shard-00002.h5")).st_mtime_ns == kept
    assert _hashes(out) == _hashes(reference) and not _leftovers(out)


def test_cli_shards_piece_on_dask_adds_up(reference, client, tmp_path, msra_dir, sun_dir):
    out = str(tmp_path / "pieces")
    addr = client.scheduler.address
    r = CliRunner().invoke(main, ["generate", out, *CLI_FLAGS, "--objects", msra_dir, "--backgrounds", sun_dir,
                                  "--shards", "1:4", "--dask", addr, "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "30 images in 3 shards" in r.output and "incomplete" in r.output
    assert sorted(n for n in os.listdir(out) if n.endswith(".h5")) == [f"shard-0000{k}.h5" for k in (1, 2, 3)]
    generate_dataset(out, _cfg(msra_dir, sun_dir), shards=(0, 1), progress=False)  # the rest, one process
    generate_dataset(out, _cfg(msra_dir, sun_dir), shards=(4, 6), workers=2, progress=False)
    assert _hashes(out) == _hashes(reference) and verify_dataset(out) == []


# ----------------------------------------------------------------------------- a worker killed mid-write

def _arm_half_writes(flag):
    """On a worker: while ``flag`` exists, a shard's writer stops after its first block of
    images, its temporary file open (so the test can kill the worker mid-write)."""
    from synthcount.shards import ShardWriter

    orig = ShardWriter.__dict__.get("_orig_write", ShardWriter.write)
    ShardWriter._orig_write = orig

    def write_then_wait(self, start, images, label_maps):
        orig(self, start, images, label_maps)  # (no flush: it would change the file's layout)
        deadline = time.time() + 60
        while os.path.exists(flag) and time.time() < deadline:
            time.sleep(0.02)

    ShardWriter.write = write_then_wait


def _disarm():
    from synthcount.shards import ShardWriter

    if "_orig_write" in ShardWriter.__dict__:
        ShardWriter.write = ShardWriter._orig_write
        del ShardWriter._orig_write


def test_worker_killed_mid_write_is_retried_with_the_same_bytes(reference, client, tmp_path, msra_dir, sun_dir):
    out = str(tmp_path / "killed")
    flag = str(tmp_path / "hold-writes")
    open(flag, "w").close()
    client.run(_arm_half_writes, flag)
    box = {}

    def run():
        try:
            box["res"] = generate_dataset(out, _cfg(msra_dir, sun_dir), client=client, progress=False)
        except BaseException as e:  # noqa: BLE001  handed to the test thread
            box["err"] = e

    t = threading.Thread(target=run)
    try:
        t.start()
        victim = None
        deadline = time.time() + 120
        while victim is None and time.time() < deadline and t.is_alive():
            for n in os.listdir(out) if os.path.isdir(out) else []:
                if ".h5.tmp-" in n:
                    victim = n
                    break
            time.sleep(0.01)
        assert victim is not None, f"no half-written shard appeared ({box})"
        shard, pid = victim.split(".h5.tmp-")[0] + ".h5", int(victim.split(".tmp-")[1].split("-")[0])
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)  # the worker dies with half of `shard` on disk
        time.sleep(0.3)
        assert not os.path.exists(os.path.join(out, shard))
    finally:
        os.remove(flag)  # the other worker, held mid-write too, goes on
        t.join(180)
        with contextlib.suppress(Exception):
            client.run(_disarm)
    assert "err" not in box, box["err"]
    res = box["res"]
    k = int(shard[6:11])
    assert k in res.shards_made and res.complete, res
    assert _hashes(out) == _hashes(reference) and verify_dataset(out) == [] and not _leftovers(out)
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the dead worker


def test_a_held_shard_lock_is_waited_for_not_skipped(reference, client, tmp_path, msra_dir, sun_dir):
    """A shard whose lock another process holds (here: this test; in life, a worker the
    scheduler gave up on while it still worked) is made once the lock is free."""
    from synthcount.locks import ShardLock

    out = tmp_path / "held"
    out.mkdir()
    lock = ShardLock(str(out), "shard-00002.h5")
    assert lock.acquired
    box = {}
    t = threading.Thread(target=lambda: box.update(res=generate_dataset(str(out), _cfg(msra_dir, sun_dir),
                                                                        client=client, progress=False)))
    t.start()
    deadline = time.time() + 120
    while len([n for n in os.listdir(out) if n.endswith(".h5")]) < 5 and time.time() < deadline:
        time.sleep(0.05)
    assert t.is_alive() and not (out / "shard-00002.h5").exists()  # the run waits for shard 2
    lock.release()  # as if its holder died
    t.join(120)
    res = box["res"]
    assert res.shards_made == list(range(6)) and not res.shards_busy and res.complete
    assert _hashes(str(out)) == _hashes(reference)


def _fail_image(index):
    """On a worker: image ``index`` cannot be laid out (as if at the failure probability)."""
    from synthcount import compose

    orig = compose.Composer.__dict__.get("_orig_compose_into", compose.Composer.compose_into)
    compose.Composer._orig_compose_into = orig

    def failing(self, seed, i, *args):
        if i == index:
            raise compose.PlacementError(f"could not lay out image {i} (test)")
        return orig(self, seed, i, *args)

    compose.Composer.compose_into = failing


def _unfail():
    from synthcount import compose

    if "_orig_compose_into" in compose.Composer.__dict__:
        compose.Composer.compose_into = compose.Composer._orig_compose_into
        del compose.Composer._orig_compose_into


def test_a_task_error_stops_the_run_keeping_finished_shards(client, tmp_path, msra_dir, sun_dir):
    from synthcount.compose import PlacementError

    out = str(tmp_path / "fail")
    client.run(_fail_image, 25)
    try:
        with pytest.raises(PlacementError, match="image 25"):  # the worker's own error, raised on the client
            generate_dataset(out, _cfg(msra_dir, sun_dir), client=client, progress=False)
    finally:
        client.run(_unfail)
    names = os.listdir(out)
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert "shard-00002.h5" not in names and not _leftovers(out)
    assert [s["file"] for s in man["shards"]] == sorted(n for n in names if n.endswith(".h5"))
    assert verify_dataset(out) == []


# ----------------------------------------------------------------------------- no cluster / no extra

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_exit_2_nothing_written(tmp_path):
    out = tmp_path / "none"
    addr = f"tcp://127.0.0.1:{_free_port()}"
    r = CliRunner().invoke(main, ["generate", str(out), "--num-images", "10", "--quiet", "--dask", addr])
    assert r.exit_code == 2 and "cannot reach a Dask scheduler" in r.output and addr in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(sd.SchedulerUnreachable, match="cannot reach"):  # the Python entry, Dask's own timeout
        sd.connect(addr, timeout=0.5)
    r = CliRunner().invoke(main, ["generate", str(out), "--num-images", "10", "--dask", "local:0"])
    assert r.exit_code == 2 and "local:N" in r.output and not out.exists()


def test_without_the_extra_dask_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    out = tmp_path / "x"
    r = CliRunner().invoke(main, ["generate", str(out), "--num-images", "10", "--dask", "local"])
    assert r.exit_code == 2 and "pip install 'synthcount[dask]'" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


# ----------------------------------------------------------------------------- OUT_DIR the workers cannot share

def _can_unshare():
    try:
        return subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def _worker_in_namespace(address, mount_cmd):
    """A ``dask worker`` whose view of the filesystem differs from ours by ``mount_cmd``."""
    script = f'{mount_cmd} && exec "$0" -m distributed.cli.dask_worker "$1" --nthreads 1 --no-nanny --no-dashboard'
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen(["unshare", "-Urm", "sh", "-c", script, sys.executable, address], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield p
    finally:
        p.kill()
        p.wait(30)


@pytest.mark.skipif(not _can_unshare(), reason="needs unprivileged user and mount namespaces (unshare -Urm)")
def test_out_dir_not_shared_is_one_line_and_nothing_left(tmp_path, monkeypatch):
    monkeypatch.setattr(sd, "VISIBILITY_GRACE_S", 0.5)  # a local filesystem shows files at once
    shared = tmp_path / "shared"
    shared.mkdir()
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    cfg = DatasetConfig(scene=SceneConfig(size=(48, 48)), num_images=8, shard_size=4)
    cluster = distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=40)
    c = distributed.Client(cluster, set_as_default=False)
    cases = [(f'mount -t tmpfs tmpfs "{shared}"', "cannot find"),  # the worker sees an empty folder
             (f'mount -t overlay overlay -o lowerdir="{shared}",upperdir="{upper}",workdir="{work}" "{shared}"',
              "client cannot see")]  # the worker sees our files, we never see its own
    try:
        for mount, words in cases:
            with _worker_in_namespace(cluster.scheduler_address, mount):
                c.wait_for_workers(1, timeout=120)
                # A new name each time: an overlay does not promise to show later changes of
                # its lower folder (here: a folder made, removed and made again).
                out = shared / "py"
                with pytest.raises(sd.OutDirNotShared, match=words):
                    generate_dataset(str(out), cfg, client=c, progress=False)
                assert not out.exists()  # the folder this run made is removed again
                out = shared / "cli"
                r = CliRunner().invoke(main, ["generate", str(out), "--num-images", "8", "--shard-size", "4",
                                              "--size", "48", "--quiet", "--dask", cluster.scheduler_address])
                assert r.exit_code == 2 and words in r.output and len(r.output.strip().splitlines()) == 1
                assert not out.exists()
            deadline = time.time() + 60
            while c.scheduler_info()["workers"] and time.time() < deadline:
                time.sleep(0.1)
    finally:
        c.close()
        cluster.close()
    shutil.rmtree(upper, ignore_errors=True)


def test_task_refuses_an_out_dir_it_cannot_find(tmp_path):
    """A worker that joins after the probe and cannot see OUT_DIR fails its task in one line."""
    job = sd.ShardJob("t", str(tmp_path / "elsewhere"), {}, grace=0.2)
    with pytest.raises(sd.OutDirNotShared, match="cannot find .*elsewhere"):
        sd._shard_task(0, job)
