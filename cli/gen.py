"""``synthcount generate | prepare | inspect | preview | verify`` (thin over synthcount.*).

Exit codes: 0 success; 2 bad usage or bad input (one line on stderr, nothing
written); 1 a failed check (``verify``) or a failed run.
"""

from __future__ import annotations

import json
import os

import click

from synthcount.config import PRESETS

from ._errors import fail, usage

__all__ = ["COMMANDS", "generate", "prepare", "inspect", "preview", "verify"]


def _parse_shards(text):
    if text is None:
        return None
    try:
        a, b = text.split(":")
        return int(a), int(b)
    except ValueError:
        raise click.BadParameter(f"must be I:J (two integers), got {text!r}", param_hint="--shards") from None


def _parse_min_visible(text):
    if text is None:
        return None
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise click.BadParameter(f"must be a number in [0, 1] or one per N (comma-separated), got {text!r}",
                                 param_hint="--min-visible") from None
    return vals[0] if len(vals) == 1 else tuple(vals)


def _parse_distractors(text):
    """``K`` -> K, ``A:B`` -> (A, B); the ranges are checked by SceneConfig."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise click.BadParameter(f"must be K or A:B (integers), got {text!r}", param_hint="--distractors")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _parse_pair(text, flag, kind=float):
    """``A:B`` -> (A, B); the ranges are checked by SceneConfig."""
    if text is None:
        return None
    try:
        parts = [kind(v) for v in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) != 2:
        raise click.BadParameter(f"must be A:B ({'integers' if kind is int else 'numbers'}), got {text!r}",
                                 param_hint=flag)
    return tuple(parts)


def _parse_match(values):
    """Repeatable and comma-separated ``--match`` -> a tuple of names (checked by SceneConfig)."""
    out = tuple(v.strip() for text in values or () for v in text.split(",") if v.strip())
    return out or None


def _pair(ctx, param, value):
    """``A:B`` -> (A, B) floats (``--rotation D`` alone: -D:D); the ranges are checked by SceneConfig."""
    if value is None:
        return None
    parts = str(value).split(":")
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        vals = []
    if param.name == "rotation_range" and len(vals) == 1:
        vals = [-abs(vals[0]), abs(vals[0])]
    if len(vals) != 2:
        raise click.BadParameter(f"must be A:B (two numbers), got {value!r}")
    return tuple(vals)


def _check_distractor_objects(ctx, param, value):
    if value is not None and value != "builtin" and not os.path.exists(value):
        raise click.BadParameter(f"must be 'builtin' or an existing folder or pack, got {value!r}")
    return value


# Config fields whose checks (in synthcount.config) a flag feeds: name the flag in the message.
_FIELD_FLAGS = {"min_visible": "--min-visible", "size": "--size", "max_count": "--max-count", "min_gap": "--min-gap",
                "num_images": "--num-images", "shard_size": "--shard-size", "seed": "--seed", "mode": "--mode",
                "distractors": "--distractors", "distractor_min_visible": "--distractor-min-visible",
                "distractor_objects": "--distractor-objects", "classes": "--classes", "design": "--design",
                "match": "--match", "design_count": "--design-count", "item_area_range": "--item-area",
                "field_area_range": "--field-area", "design_tolerance": "--design-tolerance",
                "ref_side_range": "--object-size", "area_fraction_range": "--area-fraction",
                "scale_jitter": "--scale-jitter", "rotation_range": "--rotation", "flip_p": "--flip",
                "area_mode": "--area-mode", "blend": "--blend", "unfit": "--unfit",
                "source_mode": "--source-mode"}


def _flagify(msg: str) -> str:
    field = msg.split(" ", 1)[0]
    return f"{_FIELD_FLAGS[field]} (or {field} in --config): {msg}" if field in _FIELD_FLAGS else msg


def build_config(config_file=None, preset_name=None, **flags):
    """A DatasetConfig from a config file, a preset and explicit flags (flags win);
    see :meth:`synthcount.config.DatasetConfig.from_sources`."""
    from synthcount.config import DatasetConfig

    if preset_name is not None and preset_name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset_name!r}")
    overrides = dict(flags)
    if overrides.get("num_images") is None and not config_file:
        raise ValueError("--num-images is required (or num_images in --config)")
    cfg = DatasetConfig.from_sources(file=config_file, preset=preset_name, overrides=overrides)
    if overrides.get("num_images") is None and config_file:
        from synthcount.config import load_config_file

        if "num_images" not in load_config_file(config_file):
            raise ValueError("--num-images is required (or num_images in --config)")
    return cfg


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--num-images", type=click.IntRange(min=1), default=None,
              help="Images in the dataset (required unless in --config).  [default: none, required]")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Root seed.  [default: 0]")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes; never changes the output. With --dask, local processes of the layout survey only.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, help="Images per shard.  [default: 1000]")
@click.option("--shards", "shards_text", default=None, metavar="I:J",
              help="Make only shards I (inclusive) to J (exclusive) of the dataset.  [default: all]")
@click.option("--size", default=None, metavar="161|HxW", help="Output size.  [default: 161]")
@click.option("--objects", type=click.Path(exists=True), default=None,
              help="Object source folder (MSRA10K layout or RGBA cut-outs) or pack.  [default: built-in]")
@click.option("--backgrounds", type=click.Path(exists=True), default=None,
              help="Background source folder (SUN397 layout or images) or pack.  [default: built-in]")
@click.option("--background-classes", multiple=True, metavar="/f/forest/needleleaf",
              help="SUN397 class filter (repeatable).  [default: all classes]")
@click.option("--source-mode", type=click.Choice(["auto", "memory", "stream"]), default=None,
              help="Hold --objects/--backgrounds in memory, stream them from disk per image (bounded cache), or "
                   "auto: in memory when they fit, else streamed. Never changes the output.  [default: auto]")
@click.option("--max-count", type=click.IntRange(min=0, max=255), default=None,
              help="Largest number of objects N.  [default: 4]")
@click.option("--mode", type=click.Choice(["same", "mixed"]), default=None,
              help="same: N copies of one object; mixed: N different objects.  [default: same]")
@click.option("--min-visible", default=None, metavar="T",
              help="Occlusion threshold t in [0, 1], or one per N as t0,t1,...  [default: 1.0]")
@click.option("--min-gap", type=click.IntRange(min=0), default=None,
              help="Minimum gap between objects (pixels; needs t = 1).  [default: 0]")
@click.option("--object-size", "ref_side_range", default=None, metavar="A:B", callback=_pair,
              help="Longer side of the objects relative to the image height, drawn in A..B per layout "
                   "(--area-mode independent).  [default: 0.4:0.8; with distractors times "
                   "sqrt(N_max / (N_max + B)), e.g. 0.302:0.605 for --distractors 1:3]")
@click.option("--area-fraction", "area_fraction_range", default=None, metavar="A:B", callback=_pair,
              help="--area-mode decorrelated: the targets' cumulative area relative to the image area, drawn "
                   "log-uniformly in A..B.  [default: 0.04:0.16; with distractors times N_max / (N_max + B)]")
@click.option("--scale-jitter", "scale_jitter", default=None, metavar="A:B", callback=_pair,
              help="Per-copy size factor drawn in A..B.  [default: 0.85:1.15]")
@click.option("--rotation", "rotation_range", default=None, metavar="A:B|D", callback=_pair,
              help="Per-copy rotation in degrees drawn in A..B (D alone: -D..D).  [default: -10:10]")
@click.option("--flip", "flip_p", type=click.FloatRange(0, 1), default=None, metavar="P",
              help="Probability of a horizontal flip per copy.  [default: 0.5]")
@click.option("--area-mode", type=click.Choice(["independent", "decorrelated"]), default=None,
              help="independent: object sizes from --object-size (the paper); decorrelated: cumulative area "
                   "drawn independently of N (--area-fraction).  [default: independent]")
@click.option("--blend", type=click.Choice(["soft", "hard", "feather"]), default=None,
              help="Alpha blending.  [default: soft]")
@click.option("--compression", type=click.Choice(["lzf", "gzip", "none"]), default=None,
              help="Image compression.  [default: none]")
@click.option("--label-compression", type=click.Choice(["lzf", "gzip", "none"]), default=None,
              help="Label-map compression; gzip is read by every HDF5 tool, lzf only by h5py.  [default: gzip]")
@click.option("--distractors", "distractors_text", default=None, metavar="K|A:B",
              help="Uncounted objects per image: K, or a number drawn uniformly in A..B (labels N+1..N+K, "
                   "object_role 1).  [default: 0]")
@click.option("--distractor-objects", default=None, metavar="PATH|builtin", callback=_check_distractor_objects,
              help="Where distractors come from: a folder or pack, or builtin.  [default: the object pool, "
                   "less the image's target identities]")
@click.option("--distractor-min-visible", type=float, default=None, metavar="T",
              help="Visibility threshold of the distractors in [0, 1].  [default: the targets' --min-visible]")
@click.option("--classes", type=int, default=None, metavar="C",
              help="--mode mixed: each image's targets are copies of C objects; class_counts (n, C) is stored "
                   "and count stays the total.  [default: none: N different objects]")
@click.option("--design", type=click.Choice(["dewind", "match"]), default=None,
              help="Designed stimulus space: dewind (log N, log Size, log Spacing drawn independently and "
                   "uniformly) or match (a standard set and the --match control sets); stimulus_set and "
                   "design_target are recorded.  [default: none]")
@click.option("--match", "match_texts", multiple=True, metavar="PROPERTY",
              help="Control sets holding one property constant across N: total-area, item-area, field-area, "
                   "density (repeatable or comma-separated; implies --design match).  [default: none]")
@click.option("--design-count", "design_count_text", default=None, metavar="A:B",
              help="N range of a design (log-uniform; A >= 2); --max-count defaults to B.  [default: 4:16]")
@click.option("--item-area", "item_area_text", default=None, metavar="A:B",
              help="Design: item area as a fraction of the image at the geometric-mean N (dewind: sets the Size "
                   "range).  [default: 0.003:0.006]")
@click.option("--field-area", "field_area_text", default=None, metavar="A:B",
              help="Design: field area (convex hull) as a fraction of the image at the geometric-mean N (dewind: "
                   "sets the Spacing range).  [default: 0.15:0.3]")
@click.option("--design-tolerance", type=float, default=None, metavar="F",
              help="Design: largest relative error of the achieved Size and Spacing; layouts that miss are "
                   "redrawn.  [default: 0.05]")
@click.option("--preset", "preset_name", default=None, type=click.Choice(sorted(PRESETS)),
              help="Scene preset (docs/generation.md, \"Presets\"); explicit flags override it.  [default: paper]")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or JSON file with a DatasetConfig dict; explicit flags override it.  [default: none]")
@click.option("--unfit", type=click.Choice(["error", "redraw"]), default=None,
              help="An object that cannot be laid out N times: refuse the run (error, default) or draw another "
                   "object for such images (redraw, recorded in unfit_redraws).  [default: error]")
@click.option("--overwrite", is_flag=True, help="Replace a different dataset in OUT_DIR.")
@click.option("--wait", is_flag=True, help="Wait for another run writing OUT_DIR instead of exiting 2.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Make the shards as tasks on a Dask cluster: tcp://HOST:PORT of a running scheduler, a scheduler "
                   "file (.json), or local / local:N for N worker processes here. OUT_DIR must be on a filesystem "
                   "every worker mounts at the same path. Needs the [dask] extra.  [default: none: this machine]")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(out_dir, shards_text, workers, overwrite, wait, quiet, config_file, preset_name, dask_address,
             distractors_text, match_texts, design_count_text, item_area_text, field_area_text, **flags):
    """Generate a counting dataset into OUT_DIR (resumes a matching one)."""
    import signal

    me = os.getpid()

    def terminated(signum, frame):
        if os.getpid() != me:  # a forked helper (a pool's worker) inherited this handler: die as by default
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, terminated)
    try:
        _generate(out_dir, shards_text, workers, overwrite, wait, quiet, config_file, preset_name, dask_address,
                  distractors_text, match_texts, design_count_text, item_area_text, field_area_text, **flags)
    except KeyboardInterrupt:
        _interrupted(out_dir, "interrupted (Ctrl-C)", 130)
    except _Terminated:
        _interrupted(out_dir, "terminated (SIGTERM)", 143)
    finally:
        signal.signal(signal.SIGTERM, old)


class _Terminated(BaseException):
    """SIGTERM (what Slurm sends before SIGKILL), raised in the main thread so that the
    run cleans up as for Ctrl-C."""


def _interrupted(out_dir: str, what: str, code: int) -> None:
    """One line: what an interrupted run kept and the command that resumes it; exit ``code``."""
    import shlex
    import sys

    from synthcount.shards import read_manifest, shard_index_of

    try:
        kept = sorted(k for k in (shard_index_of(n) for n in os.listdir(out_dir)) if k is not None)
    except OSError:
        kept = []
    try:
        total = f" of {read_manifest(out_dir)['num_shards_planned']}"
    except (OSError, ValueError, KeyError, TypeError):
        total = ""
    argv = sys.argv[sys.argv.index("generate") + 1:] if "generate" in sys.argv else None
    again = f"`synthcount generate {shlex.join(argv)}`" if argv else "the same command"
    if kept:
        click.echo(f"Error: {what}: {len(kept)}{total} finished shard(s) are kept in {out_dir}; {again} resumes "
                   "the run from them", err=True)
    else:
        click.echo(f"Error: {what} before any shard was finished; nothing is kept; {again} starts it again",
                   err=True)
    sys.exit(code)


def _generate(out_dir, shards_text, workers, overwrite, wait, quiet, config_file, preset_name, dask_address,
              distractors_text, match_texts, design_count_text, item_area_text, field_area_text, **flags):
    from synthcount.compose import PlacementError
    from synthcount.generate import plan_generation, run_plan

    shards = _parse_shards(shards_text)
    flags["min_visible"] = _parse_min_visible(flags["min_visible"])
    flags["distractors"] = _parse_distractors(distractors_text)
    flags["match"] = _parse_match(match_texts)
    flags["design_count"] = _parse_pair(design_count_text, "--design-count", int)
    flags["item_area_range"] = _parse_pair(item_area_text, "--item-area")
    flags["field_area_range"] = _parse_pair(field_area_text, "--field-area")
    if dask_address is not None:
        from synthcount.distributed import check_reachable, require_distributed

        try:
            require_distributed()
            check_reachable(dask_address)  # before the layout survey, which may take a while
        except ValueError as e:  # the [dask] extra is missing, a malformed ADDRESS, no scheduler there
            fail(str(e), 2)
    try:
        config = build_config(config_file, preset_name, **flags)
        warning = config.scene.size_warning()
        if warning:
            click.echo(f"Warning: {warning}", err=True)
        # Validates everything (sources and the layout survey included) before OUT_DIR is touched.
        plan = plan_generation(out_dir, config, shards=shards, overwrite=overwrite, workers=workers,
                               progress=not quiet)
    except (ValueError, TypeError) as e:  # includes SourceError; TypeError: wrongly typed --config values
        usage(_flagify(str(e)))
    except OSError as e:
        fail(f"cannot plan the run: {e}", 1)
    # After planning: the layout survey may fork, which must happen before the Dask
    # client starts its threads. Nothing is written until run_plan.
    client, cluster = _connect(dask_address) if dask_address is not None else (None, None)
    try:
        res = run_plan(plan, workers=workers, progress=not quiet, wait=wait, client=client)
    except ValueError as e:  # the folder is in use (FolderBusy) or now holds another dataset; OUT_DIR not shared
        fail(str(e), 2)
    except (PlacementError, RuntimeError) as e:  # RuntimeError: DaskRunError (a task kept killing workers, ...)
        fail(f"generation failed: {e}", 1)
    except OSError as e:  # WriteError (disk full, ...) and ShardError name the file
        fail(f"generation failed: {e}", 1)
    finally:
        if client is not None:
            from synthcount.distributed import close

            close(client, cluster)
    corr = "undefined" if res.corr_log_n_log_a is None else f"{res.corr_log_n_log_a:.3f}"
    click.echo(f"{res.images_written} images in {len(res.shards_made)} shards ({len(res.shards_skipped)} kept) "
               f"in {res.seconds:.1f} s: {res.images_per_second:.0f} images/s; layout resamples "
               f"{res.layout_resamples} (most for one image {res.max_layout_tries} of {res.layout_budget} allowed); "
               f"corr(log N, log A) = {corr}; skipped source files: {len(res.skipped_sources)}")
    for f, why in res.skipped_sources[:20]:
        click.echo(f"  skipped {f}: {why}", err=True)
    if len(res.skipped_sources) > 20:
        click.echo(f"  ... and {len(res.skipped_sources) - 20} more", err=True)
    if res.shards_busy:
        click.echo(f"{len(res.shards_busy)} shard(s) were being made by another run at the same time "
                   f"({', '.join(map(str, res.shards_busy[:10]))}{' ...' if len(res.shards_busy) > 10 else ''})")
    if not res.complete:
        click.echo(f"{out_dir}: dataset incomplete (pieces still missing: run the other --shards ranges)")


def _connect(address: str):
    """``(client, cluster)`` for ``--dask``; exit 2 with one line when no scheduler answers."""
    from synthcount.distributed import connect

    try:
        return connect(address)
    except ValueError as e:  # SchedulerUnreachable
        fail(str(e), 2)
    except (OSError, RuntimeError) as e:  # a LocalCluster that could not start its workers
        fail(f"--dask {address}: cannot start the cluster ({e})", 1)


@click.command()
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out_pack", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["objects", "backgrounds"]), required=True)
@click.option("--max-side", type=click.IntRange(min=8), default=256, show_default=True,
              help="Objects: longest side; backgrounds: shortest side (pixels).")
@click.option("--mask-threshold", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Mask alpha at and above which a pixel counts as object (objects only).")
@click.option("--classes", multiple=True, metavar="/f/forest/needleleaf",
              help="SUN397 class filter (repeatable).  [default: all classes]")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(src_dir, out_pack, kind, max_side, mask_threshold, classes, workers, quiet):
    """Decode SRC_DIR once into the asset pack OUT_PACK (+ OUT_PACK.report.json)."""
    from synthcount.sources import prepare as _prepare

    try:
        pack = _prepare(src_dir, out_pack, kind, max_side=max_side, mask_threshold=mask_threshold,
                        classes=tuple(classes), workers=workers, progress=not quiet)
    except ValueError as e:
        usage(str(e))
    except OSError as e:
        fail(f"prepare failed: {e}", 1)
    except KeyboardInterrupt:
        from synthcount.sources import PARTIAL_SUFFIX

        fail(f"prepare interrupted: what is decoded so far is kept in {out_pack}{PARTIAL_SUFFIX}; "
             "the same command resumes it", 130)
    n = len(pack.objects) if kind == "objects" else len(pack.backgrounds)
    click.echo(f"{out_pack}: {n} {kind}, {len(pack.skipped)} skipped (see {out_pack}.report.json)")


def _open(path):
    from synthcount.reader import open_dataset

    try:
        return open_dataset(path)
    except ValueError as e:
        usage(str(e))


@click.command()
@click.argument("dataset", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def inspect(dataset, as_json):
    """Count histogram, area statistics, corr(log N, log A) and shards of DATASET."""
    from synthcount.reader import ShardReadError
    from synthcount.stats import format_summary, summarize

    with _open(dataset) as ds:
        try:
            s = summarize(ds)
        except ShardReadError as e:  # names the shard and says to run verify
            fail(e, 1)
        except (OSError, KeyError, ValueError) as e:
            fail(f"{dataset}: cannot read ({e}); run synthcount verify", 1)
    click.echo(json.dumps(s) if as_json else format_summary(s))


@click.command()
@click.argument("dataset", type=click.Path(exists=True))
@click.argument("out_png", type=click.Path(dir_okay=False))
@click.option("--n", type=click.IntRange(min=1), default=64, show_default=True, help="Tiles.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the tile choice.")
def preview(dataset, out_png, n, seed):
    """Contact sheet PNG of DATASET with counts and object outlines."""
    from synthcount.reader import ShardReadError
    from synthcount.stats import preview as _preview

    with _open(dataset) as ds:
        try:
            _preview(ds, out_png, n=n, seed=seed)
        except ShardReadError as e:  # names the shard and says to run verify
            fail(e, 1)
        except ValueError as e:
            usage(str(e))
        except OSError as e:
            fail(f"{out_png}: {e}", 1)
    click.echo(out_png)


@click.command()
@click.argument("dataset", type=click.Path(exists=True))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify(dataset, quiet):
    """Check every shard: readable, schema, checksums, labels agree with pixels."""
    from synthcount.shards import verify_dataset

    problems = verify_dataset(dataset, progress=not quiet)
    if problems:
        for p in problems:
            click.echo(f"FAIL {p}", err=True)
        fail(f"{dataset}: {len(problems)} problem(s); first: {problems[0]}", 1)
    if os.path.isdir(dataset):
        from synthcount.shards import MANIFEST, read_manifest, scan_shards

        if os.path.lexists(os.path.join(dataset, MANIFEST)):
            man = read_manifest(dataset)
            note = "" if man.get("complete", True) else " (incomplete: some planned shards are not made yet)"
        else:
            man = scan_shards(dataset)
            note = (" (no manifest.json yet: a generate run is writing it or was stopped; its finished shards are "
                    "good, and rerunning the same generate command lists them)")
        click.echo(f"OK {dataset}: {man['num_images']} images in {len(man['shards'])} shards{note}")
    else:
        click.echo(f"OK {dataset}")


COMMANDS = [generate, prepare, inspect, preview, verify]
