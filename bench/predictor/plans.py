#!/usr/bin/python3
"""Plans from predicted profiles (issue 15 item 3; docs/planner.md,
"Predicted profiles"): on one emulated cluster per preset, `asteroid train`
profiles every device at all seven batch sizes, or at --points of them
with the latency predictor completing the rest, plans, and trains the plan
for --rounds rounds. Reports, per preset and model, the profiling time,
the plan, its predicted and measured throughput, and the measured
throughput against the plan from the full profile (same cluster, same
run of this script). Writes DIR/plans.json and DIR/plans.md.

usage: plans.py --asteroid build/bin/asteroid --out DIR [--cases C:fmnist-resnet,D:fmnist-cnn] [--points 3,2]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runs import run  # noqa: E402


def summary_of(plan):
    return " | ".join(f"[{s['layers'][0]},{s['layers'][1]}) " + "+".join(f"{d['id']}:{d['samples']}" for d in s["devices"])
                      for s in plan["stages"])


def train(args, cluster, model, points, out):
    cmd = [args.asteroid, "train", "--cluster", cluster, "--model", model, "--rounds", str(args.rounds),
           "--profile-points", str(points), "--adapt", "off", "--probe-rounds", "0", "--no-baseline",
           "--no-plots", "--progress", "plain", "--test-samples", "500", "--out", out]
    run(cmd, out + ".log", args.timeout)
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    with open(os.path.join(out, "plan.json")) as f:
        plan = json.load(f)
    return {"points": points or 7, "profile_s": s["timings_s"]["profile"], "plan": summary_of(plan),
            "predicted": s.get("predicted_samples_per_s", float("nan")),
            "measured": s.get("samples_per_s_after_round_5", float("nan"))}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--asteroid", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cases", default="C:fmnist-resnet,C:fmnist-cnn,D:fmnist-resnet")
    p.add_argument("--points", default="3,2")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--timeout", type=int, default=900)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results = []
    for case in args.cases.split(","):
        env, model = case.split(":")
        cluster_dir = os.path.join(args.out, f"cluster-{env}-{model}")
        run([args.asteroid, "cluster", "up", "--env", env, "--bandwidth", "1000", "--dir", cluster_dir],
            cluster_dir + ".log", 300)
        try:
            cluster = os.path.join(cluster_dir, "cluster.json")
            for points in [0] + [int(x) for x in args.points.split(",")]:
                r = train(args, cluster, model, points, os.path.join(args.out, f"{env}-{model}-{points or 7}"))
                r.update({"env": env, "model": model})
                results.append(r)
                with open(os.path.join(args.out, "plans.json"), "w") as f:
                    json.dump(results, f, indent=2)
        finally:
            run([args.asteroid, "cluster", "down", "--dir", cluster_dir], cluster_dir + "-down.log", 120, check=False)
    full = {(r["env"], r["model"]): r["measured"] for r in results if r["points"] == 7}
    rows = ["| env, model | batch sizes measured | profiling s | plan | predicted samples/s | measured samples/s | against the full profile's plan |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['env']}, {r['model']} | {r['points']} of 7 | {r['profile_s']:.1f} | {r['plan']} | "
                    f"{r['predicted']:.0f} | {r['measured']:.0f} | {r['measured'] / full[(r['env'], r['model'])]:.2f} |")
    text = (f"env at 1000 Mbit/s, one cluster per env and model, {args.rounds} rounds each (measured: after round 5), "
            "--adapt off\n\n" + "\n".join(rows) + "\n")
    with open(os.path.join(args.out, "plans.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
