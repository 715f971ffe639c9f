"""Beam search vs Best-of-N at the same number of generated candidate steps, over several sampling
seeds, with a finished run's final policy and judge.

One demo run compares one draw of each strategy; on 400 problems a draw moves by about +-2 points.
This script runs both strategies (the run's search settings: N samples / N beams of width M) once
per seed on the run's held-out problems, through the same roles as the run (policy generator
actor, judge Serve deployment), and prints every draw, the means and the paired 95% interval of
beam minus Best-of-N pooled over the seeds.

    .venv/bin/python bench/beam_vs_bon.py --run runs/<name> [--seeds 0 1 2] [--aggregation prod]
        [--beam-prune-below none 0.5] [--set k=v ...] [--smoke (one seed: a check)]

Measured (2-core CPU, one demo run's final models, Best-of-8 with min, beam N=8 M=4 with min;
`--beam-prune-below none 0.5`, 16.7 min):

     seed   BoN %      beam %  beam<0.5 %   steps
        0   84.75       86.00       85.75   11280
        1   86.50       86.25       89.00   11280
        2   84.75       86.50       86.50   11280
     mean   85.33       86.25       87.08
    beam - Best-of-N over 3 seeds: +0.9 points, 95% CI [-0.7, +2.5]
    beam<0.5 - Best-of-N over 3 seeds: +1.8 points, 95% CI [+0.2, +3.2]
    beam<0.5 - beam: +0.8 points, 95% CI [+0.1, +1.7]

This script's Best-of-N samples through `run_best_of_n` with `search.sampling`; the demo's
final/best_of_n stage samples its own way and drew 85.75 at seed 0. The pooled interval treats each
(seed, problem) draw as one unit.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rprm_ray.config import load_recipe
from rprm_ray.evaluation.stats import paired_difference
from rprm_ray.search import run_beam, run_best_of_n
from rprm_ray.stages.policy import correct_by_problem
from rprm_ray.tasks import make_task


def _prune_value(text: str) -> float | None:
    return None if text.lower() in ("none", "null") else float(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory (runs/<name>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--aggregation", default=None, help="Best-of-N's (default: the run's best_aggregation)")
    parser.add_argument("--beam-prune-below", type=_prune_value, nargs="+", default=None, metavar="T|none",
                        help="beam variants to run beside Best-of-N (default: the run's search.beam_prune_below)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the run's recipe (e.g. resources.serve_port=8001)")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks that the bench runs")
    args = parser.parse_args()
    if args.smoke:  # one seed, a few problems: a check that the bench runs, not a figure
        args.seeds = args.seeds[:1]

    from rprm_ray.roles import Roles, init_ray

    manifest = json.loads((args.run / "manifest.json").read_text())
    state = manifest["state"]
    bon_how = args.aggregation or manifest["stages"]["final/best_of_n"]["metrics"]["best_aggregation"]
    recipe = load_recipe(args.run / "recipe.yaml", ["name=bench-beam-vs-bon", *args.overrides])
    task = make_task(recipe)
    problems = task.problems("eval")
    if args.smoke:
        problems = problems.slice(0, 2)
    s = recipe.search
    variants = args.beam_prune_below if args.beam_prune_below is not None else [s.beam_prune_below]
    names = [f"beam<{v}" if v is not None else "beam" for v in variants]
    init_ray(recipe)
    roles = Roles(recipe)
    try:
        generator = roles.generator(str(Path(state["policy_dir"]).resolve()))
        judge = roles.judge(str(Path(state["judge_dir"]).resolve()))
        print(f"{problems.num_rows} problems; Best-of-{s.samples_per_prompt} ({bon_how}) vs beam "
              f"N={s.samples_per_prompt} M={s.beam_width} ({s.aggregation}); beam<T: beam_prune_below T")
        print(f"{'seed':>5}{'BoN %':>8}" + "".join(f"{n + ' %':>12}" for n in names) + f"{'steps':>8}")
        bon_all: list[bool] = []
        beam_all: dict[str, list[bool]] = {n: [] for n in names}
        acc: dict[str, list[float]] = {n: [] for n in ["bon", *names]}
        for seed in args.seeds:
            sampling = s.sampling.model_copy(update={"seed": seed})
            bon = correct_by_problem(run_best_of_n(
                problems, generator, judge, s.model_copy(update={"aggregation": bon_how, "sampling": sampling}),
                task.style, grade=task.grade))
            ids = sorted(bon)
            bon_all += [bon[i] for i in ids]
            acc["bon"].append(100 * sum(bon.values()) / len(bon))
            steps = 0
            for name, prune in zip(names, variants, strict=True):
                cfg = s.model_copy(update={"sampling": sampling, "beam_prune_below": prune})
                results = run_beam(problems, generator, judge, cfg, task.style, grade=task.grade)
                beam = correct_by_problem(results)
                beam_all[name] += [beam[i] for i in ids]
                acc[name].append(100 * sum(beam.values()) / len(beam))
                steps = sum(results.column("candidate_steps").to_pylist())
            print(f"{seed:>5}{acc['bon'][-1]:>8.2f}" + "".join(f"{acc[n][-1]:>12.2f}" for n in names)
                  + f"{steps:>8}", flush=True)
        print(f"{'mean':>5}{statistics.mean(acc['bon']):>8.2f}"
              + "".join(f"{statistics.mean(acc[n]):>12.2f}" for n in names))
        for name in names:
            print(f"{name} - Best-of-N over {len(args.seeds)} seeds: {paired_difference(beam_all[name], bon_all).text()}")
        if len(names) > 1:
            print(f"{names[-1]} - {names[0]}: {paired_difference(beam_all[names[-1]], beam_all[names[0]]).text()}")
    finally:
        roles.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
