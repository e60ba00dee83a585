"""Time to a verdict: `recipes/classical_50pct.toml` on PBC at 32 px, baseline + classical, 3 seeds,
every run trained to its validation plateau. Goal: <= 30 minutes on 2 idle cores.

The recipe runs in a fresh run folder with an empty model cache (no classifier run is reused), and the
time to the verdict is the sum of the stages that lead to the whole-split verdict (data, split,
classical images, evaluation); with ``--fractions`` the data-efficiency curve's stages run too and are
timed apart. Prints the stage table, the verdict and the load average, and writes them as JSON.

    .venv/bin/python benchmarks/verdict.py --out runs/verdict                    # ~30 min on 2 cores
    .venv/bin/python benchmarks/verdict.py --out runs/verdict --fractions 0.1,0.25,1.0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PBC = ROOT.parent / "shared" / "data" / "pbc128"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=PBC)
    ap.add_argument("--out", type=Path, required=True, help="run folder (must not exist, unless --resume)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fractions", default="1.0", help="training fractions, e.g. 0.1,0.25,1.0")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="more recipe overrides")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--goal-minutes", type=float, default=30.0)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is not here (the PBC images)")
        return
    if not args.resume:
        os.environ["AUGKIT_CACHE_DIR"] = str(args.out.absolute()) + "-cache"  # nothing reused from earlier runs
    from augkit.recipe import load_recipe
    from augkit.runner import run_recipe

    fractions = "[" + ",".join(f.strip() for f in args.fractions.split(",")) + "]"
    sets = [f"data.source={args.data}", f"data.image_size={args.size}", f"evaluate.seeds={args.seeds}",
            f"evaluate.train_fractions={fractions}", *args.sets]
    recipe = load_recipe(ROOT / "recipes" / "classical_50pct.toml", sets, out=args.out)
    load_before = os.getloadavg()
    started = time.time()
    run_recipe(recipe, device="cpu", resume=args.resume, say=lambda line: print(line, flush=True),
               command=" ".join([sys.executable, *sys.argv]))
    stages = json.loads((args.out / "state.json").read_text())["stages"]
    to_verdict = sum(v["seconds"] for k, v in stages.items() if "@" not in k and k not in ("report",
                                                                                           "data-efficiency curve"))
    curve = sum(v["seconds"] for k, v in stages.items() if "@" in k)
    metrics = json.loads((args.out / "evaluate" / "metrics.json").read_text())
    d = metrics["deltas"]["classical"]["weighted_f1"]
    result = {
        "stages": {k: v["seconds"] for k, v in stages.items()}, "time_to_verdict_s": to_verdict,
        "curve_stages_s": curve, "wall_s": time.time() - started, "load_average": [load_before, os.getloadavg()],
        "baseline_weighted_f1": [r["metrics"]["weighted_f1"] for r in metrics["arms"]["baseline"]["runs"]],
        "classical_weighted_f1": [r["metrics"]["weighted_f1"] for r in metrics["arms"]["classical"]["runs"]],
        "delta": d, "under_trained": metrics["under_trained"], "protocol": metrics["protocol"],
        "goal": f"<= {args.goal_minutes} min", "pass": to_verdict <= 60 * args.goal_minutes,
    }
    for k, v in stages.items():
        print(f"{k:40s} {v['seconds']:8.0f} s")
    print(f"time to verdict: {to_verdict / 60:.1f} min ({'PASS' if result['pass'] else 'FAIL'}, goal "
          f"<= {args.goal_minutes:g} min); curve stages {curve / 60:.1f} min; load average "
          f"{load_before[0]:.2f} before, {result['load_average'][1][0]:.2f} after")
    print(f"classical - baseline: {d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]; flagged: "
          f"{metrics['under_trained'] or 'none'}")
    (args.out / "verdict_benchmark.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
