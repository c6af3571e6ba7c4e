"""Distractors on any scene (issue 22): how fast the layout survey answers, and how fast
distractor datasets are made.

``python -m benchmarks.distractors [--quick] [--out FILE.json] [--images 20000]``

1. The survey, as ``synthcount generate`` runs it (``plan_generation``: sources
   resolved, ``check_feasible``, the survey, the refusal message with its computed
   sizes), for every preset with ``--distractors 0:5`` under ``--unfit error`` and
   ``--unfit redraw``, and for two requests that cannot be laid out
   (``--object-size 0.4:0.8`` with ``2:5``; ``decorrelated`` with
   ``--area-fraction 0.04:0.16`` and ``0:5``): the answer (admitted or the refusal's
   first words) and the seconds (wall and CPU of this process).
2. The default scene with ``--distractors 1:3`` and ``2:5``: ``--images`` images in one
   process (``generate_dataset``, workers 1, 161x161, shards of 1000), images/s by the
   wall clock and by CPU time, the failed images (a failure ends the run, so 0 or the
   run's error), the survey's seconds and budget, and the most layouts one image used.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from synthcount.config import PRESETS, DatasetConfig
from synthcount.generate import generate_dataset, plan_generation

from ._common import Clock, emit, format_table, machine, parser, rate

__all__ = ["main"]


def _survey_case(name: str, overrides: dict, tmp: str) -> dict:
    from synthcount.config import SceneConfig

    scene = SceneConfig(**{**PRESETS.get(name, {}), **overrides})
    cfg = DatasetConfig(scene=scene, num_images=1000)
    row = {"case": name + " " + " ".join(f"{k}={v}" for k, v in overrides.items())}
    with Clock() as c:
        try:
            plan = plan_generation(os.path.join(tmp, "never-written"), cfg)
            row["answer"] = f"admitted: budget {plan.survey.budget}, trials {plan.survey.trials}"
        except ValueError as e:
            row["answer"] = "refused: " + str(e)[:160]
    row.update(wall_s=round(c.wall, 3), cpu_s=round(c.cpu, 3))
    return row


def _make(distractors, images: int, tmp: str) -> dict:
    out = os.path.join(tmp, "d")
    shutil.rmtree(out, ignore_errors=True)
    cfg = DatasetConfig(scene={"distractors": distractors}, num_images=images, shard_size=min(1000, images))
    row = {"distractors": f"{distractors[0]}:{distractors[1]}", "images": images}
    with Clock() as c:
        try:
            res = generate_dataset(out, cfg, workers=1, progress=False)
            row.update(failed=0, images_written=res.images_written, survey_s=res.layout_survey["seconds"],
                       layout_budget=res.layout_budget, most_layouts=res.max_layout_tries,
                       images_per_s_generation=round(res.images_per_second, 1))
        except Exception as e:  # a failed image ends the run: report it as the figure it is
            row.update(failed=1, error=str(e)[:300])
    row.update(wall_s=round(c.wall, 2), cpu_s=round(c.cpu, 2), images_per_s_wall=round(rate(images, c.wall), 1),
               images_per_s_cpu=round(rate(images, c.cpu), 1))
    shutil.rmtree(out, ignore_errors=True)
    return row


def main(argv=None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000, help="images per distractor dataset")
    a = p.parse_args(argv)
    images = 40 if a.quick else a.images
    tmp = tempfile.mkdtemp(prefix="bench-distractors-")
    try:
        cases = [(n, {"distractors": (0, 5), "unfit": u}) for n in sorted(PRESETS) if n != "binary"
                 for u in (("error",) if a.quick else ("error", "redraw"))]
        if a.quick:
            cases = [c for c in cases if c[0] == "fsc"]  # the cheapest survey
        else:
            cases += [("paper", {"distractors": (2, 5), "ref_side_range": (0.4, 0.8)}),
                      ("decorrelated", {"distractors": (0, 5), "area_fraction_range": (0.04, 0.16)})]
        surveys = [_survey_case(n, o, tmp) for n, o in cases]
        runs = [_make(d, images, tmp) for d in ([(1, 3)] if a.quick else [(1, 3), (2, 5)])]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"benchmark": "distractors", "quick": a.quick, "machine": machine(), "surveys": surveys, "runs": runs}
    emit(result, [format_table(surveys, ["case", "wall_s", "cpu_s", "answer"], "layout survey (plan time)"),
                  format_table(runs, ["distractors", "images", "failed", "images_per_s_wall", "images_per_s_cpu",
                                      "survey_s", "layout_budget", "most_layouts"], "distractor datasets, 1 process")],
         a.out)
    return result


if __name__ == "__main__":
    main()
