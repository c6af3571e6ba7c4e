"""``synthcount export DATASET DEST --format coco|webdataset|hf|imagefolder`` (thin over
:func:`synthcount.export.export_dataset`).

Exit codes: 0 success; 2 bad usage or bad input, a DEST that exists, or a missing
``[export]`` extra (one line on stderr, nothing written); 1 the export failed (DEST is
left as it was).
"""

from __future__ import annotations

import click

from ._errors import fail, usage
from .gen import _parse_shards

__all__ = ["COMMANDS", "export"]

# Parameter names the API's messages start with -> the flag or argument a user typed.
_FLAGS = {"shards": "--shards", "limit": "--limit", "density": "--density", "image_format": "--image-format",
          "test_fraction": "--test-fraction", "tar_size": "--tar-size"}


def _flagify(msg: str) -> str:
    first = msg.split(" ", 1)[0]
    return f"{_FLAGS[first]}: {msg}" if first in _FLAGS else msg


@click.command()
@click.argument("dataset", type=click.Path(exists=True))
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["coco", "webdataset", "hf", "imagefolder"]), required=True,
              help="coco: instances.json + images; webdataset: tar shards; hf: Hugging Face save_to_disk; "
                   "imagefolder: one folder per count + labels.csv.")
@click.option("--shards", "shards_text", default=None, metavar="I:J",
              help="Only shards I (inclusive) to J (exclusive) of DATASET.  [default: all]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N images (of the shards).  [default: all]")
@click.option("--points", is_flag=True, help="Add one point per object (visible-pixel centroid, x, y).")
@click.option("--density", type=float, default=None, metavar="SIGMA",
              help="Also write a Gaussian density map per image (sigma in pixels) summing to N.  [default: none]")
@click.option("--image-format", type=click.Choice(["png", "jpg"]), default="png", show_default=True,
              help="Image files: lossless PNG or JPEG quality 95 (masks are always PNG).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Share of images marked 'test' in the split field (a fixed hash of the image index).")
@click.option("--tar-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Images per tar shard (webdataset).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in DEST.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export(dataset, dest, fmt, shards_text, limit, points, density, image_format, test_fraction, tar_size,
           overwrite, quiet):
    """Export DATASET to DEST as COCO, WebDataset, Hugging Face datasets or an image folder."""
    from synthcount.export import ExportError, MissingExtraError, export_dataset

    shards = _parse_shards(shards_text)
    try:
        res = export_dataset(dataset, dest, fmt, shards=shards, limit=limit, points=points, density=density,
                             image_format=image_format, test_fraction=test_fraction, tar_size=tar_size,
                             overwrite=overwrite, progress=not quiet, notes=lambda line: click.echo(line, err=True))
    except MissingExtraError as e:
        fail(str(e), 2)
    except ValueError as e:
        usage(_flagify(str(e)))
    except (OSError, ExportError) as e:
        fail(f"export failed: {e}", 1)
    click.echo(f"{dest}: {res.num_images} images ({res.num_objects} objects) as {fmt} in {res.seconds:.1f} s: "
               f"{res.images_per_second:.0f} images/s")


COMMANDS = [export]
