#!/usr/bin/python3
"""Adaptive training benchmark (issue 15; docs/runtime.md, "Adaptive
training"): on emulated env C at 1000 Mbit/s with fmnist-resnet, one device
is slowed to a share of its CPU at round --slow-at and restored at
--restore-at, in three runs per device:

  - adapt:  `asteroid train` as it runs by default (--adapt on);
  - fixed:  the same with --adapt off (the plan of the start throughout);
  - fresh:  a plan made for the slowed cluster (the device slowed before the
            job profiles it), trained --fresh-rounds rounds.

and reports the rounds from the slow-down to the switch, the throughput
after the switch against the fixed run's and the fresh plan's, and after
the restore against the start. Every number comes from the run folders
(metrics.jsonl: rounds and `adapt` lines). Writes DIR/adapt.json and
DIR/adapt.md.

With --flap P the device instead swings between slowed and restored every P
rounds from --slow-at to --restore-at (a load that comes and goes), in two
runs (adapt, fixed): the switches made and the throughput over the swings
(samples over the wall time, switches included) tell whether adaptation keeps up,
or churns (switches that cost more than they save). Writes DIR/flap.json
and DIR/flap.md.

usage: adapt.py --asteroid build/bin/asteroid --out DIR [--devices nx-0,nano-0] [--flap P]
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runs import lines, run  # noqa: E402

MODEL = "fmnist-resnet"
BATCH = 64


def throughput(rounds, first, last):
    ms = [r["ms"] for r in rounds if first <= r["round"] < last]
    return BATCH * 1000.0 / statistics.median(ms) if ms else float("nan")


def train(args, out, extra):
    cmd = [args.asteroid, "train", "--model", MODEL, "--batch", str(BATCH), "--out", out, "--no-plots",
           "--progress", "plain", "--test-samples", "1000", "--probe-rounds", "0", "--no-baseline"] + extra
    run(cmd, out + ".log", args.timeout)
    return lines(os.path.join(out, "metrics.jsonl"))


def scenario(args, device):
    factor = 1.0 / args.share
    faults = os.path.join(args.out, f"faults-{device}.json")
    with open(faults, "w") as f:
        json.dump([{"round": args.slow_at, "action": "slow", "device": device, "factor": factor},
                   {"round": args.restore_at, "action": "restore", "device": device}], f)
    common = ["--env", "C", "--bandwidth", "1000", "--rounds", str(args.rounds), "--faults", faults]
    adapt = train(args, os.path.join(args.out, f"adapt-{device}"), common)
    fixed = train(args, os.path.join(args.out, f"fixed-{device}"), common + ["--adapt", "off"])
    # The fresh plan: the cluster brought up, the device slowed, then the job
    # profiles and plans it as it is.
    cluster = os.path.join(args.out, f"cluster-{device}")
    run([args.asteroid, "cluster", "up", "--env", "C", "--bandwidth", "1000", "--dir", cluster],
        cluster + ".log", 300)
    try:
        run([args.asteroid, "inject", "--dir", cluster, "slow", device, str(factor)], cluster + "-inject.log", 60)
        fresh = train(args, os.path.join(args.out, f"fresh-{device}"),
                      ["--cluster", os.path.join(cluster, "cluster.json"), "--rounds", str(args.fresh_rounds),
                       "--adapt", "off"])
    finally:
        run([args.asteroid, "cluster", "down", "--dir", cluster], cluster + "-down.log", 120)

    rounds = [m for m in adapt if "round" in m]
    switches = [m for m in adapt if m.get("event") == "adapt"]
    to_slow = [s for s in switches if device in s.get("devices", []) and args.slow_at <= s["at_round"] < args.restore_at]
    to_fast = [s for s in switches if device in s.get("devices", []) and s["at_round"] >= args.restore_at]
    switched_at = to_slow[0]["from_round"] if to_slow else None
    back_at = to_fast[0]["from_round"] if to_fast else None
    settle = 10  # rounds after a switch before measuring
    fixed_rounds = [m for m in fixed if "round" in m]
    fresh_rounds = [m for m in fresh if "round" in m]
    result = {
        "device": device,
        "share": args.share,
        "switches": len(switches),
        "kept": sum(1 for m in adapt if m.get("event") == "adapt-kept"),
        "rounds_to_switch": None if switched_at is None else switched_at - args.slow_at,
        "switch_ms": None if not to_slow else to_slow[0].get("switch_ms"),
        "before": throughput(rounds, args.slow_at - 50, args.slow_at),
        "adapt_slowed": throughput(rounds, (switched_at or args.slow_at) + settle, args.restore_at),
        "fixed_slowed": throughput(fixed_rounds, args.slow_at + settle, args.restore_at),
        "fresh_slowed": throughput(fresh_rounds, 20, args.fresh_rounds),
        "rounds_to_switch_back": None if back_at is None else back_at - args.restore_at,
        "adapt_restored": throughput(rounds, (back_at or args.restore_at) + settle, args.rounds),
        "fixed_restored": throughput(fixed_rounds, args.restore_at + settle, args.rounds),
    }
    result["adapt_vs_fresh"] = result["adapt_slowed"] / result["fresh_slowed"]
    result["adapt_vs_fixed"] = result["adapt_slowed"] / result["fixed_slowed"]
    result["restored_vs_before"] = result["adapt_restored"] / result["before"]
    return result


def wall_throughput(rounds, first, last):
    """Samples per second of wall time from round `first`'s commit to round
    `last`'s: switches and everything between rounds included."""
    t = {r["round"]: r["t_s"] for r in rounds}
    if first not in t or last not in t or t[last] <= t[first]:
        return float("nan")
    return BATCH * (last - first) / (t[last] - t[first])


def flap_scenario(args, device):
    factor = 1.0 / args.share
    schedule, slowed = [], True
    for r in range(args.slow_at, args.restore_at, args.flap):
        schedule.append({"round": r, "action": "slow", "device": device, "factor": factor} if slowed
                        else {"round": r, "action": "restore", "device": device})
        slowed = not slowed
    schedule.append({"round": args.restore_at, "action": "restore", "device": device})
    faults = os.path.join(args.out, f"flap-faults-{device}.json")
    with open(faults, "w") as f:
        json.dump(schedule, f)
    common = ["--env", "C", "--bandwidth", "1000", "--rounds", str(args.rounds), "--faults", faults]
    adapt = train(args, os.path.join(args.out, f"flap-adapt-{device}"), common)
    fixed = train(args, os.path.join(args.out, f"flap-fixed-{device}"), common + ["--adapt", "off"])
    rounds = [m for m in adapt if "round" in m]
    fixed_rounds = [m for m in fixed if "round" in m]
    switches = [m for m in adapt if m.get("event") == "adapt"]
    result = {
        "device": device, "share": args.share, "flap": args.flap,
        "swings": len(schedule) - 1,
        "switches": len(switches),
        "switches_in_swings": sum(1 for m in switches if args.slow_at <= m["at_round"] < args.restore_at),
        "kept": sum(1 for m in adapt if m.get("event") == "adapt-kept"),
        "switch_s": sum(m.get("switch_ms", 0) for m in switches) / 1000.0,
        "adapt": wall_throughput(rounds, args.slow_at, args.restore_at),
        "fixed": wall_throughput(fixed_rounds, args.slow_at, args.restore_at),
    }
    result["adapt_vs_fixed"] = result["adapt"] / result["fixed"]
    return result


def flap_table(results):
    out = ["| device swinging | every | swings | switches (in the swings) | kept | time switching s | adapt samples/s | fixed samples/s | adapt/fixed |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {r['device']} between 1 and {r['share']:.2f} | {r['flap']} rounds | {r['swings']} | "
                   f"{r['switches']} ({r['switches_in_swings']}) | {r['kept']} | {r['switch_s']:.1f} | "
                   f"{r['adapt']:.0f} | {r['fixed']:.0f} | {r['adapt_vs_fixed']:.2f}x |")
    return "\n".join(out)


def table(results):
    out = ["| device slowed | rounds to switch | switch s | before | slowed: adapt | fixed | fresh plan | adapt/fresh (target >= 0.9) | adapt/fixed (>= 1.3) | rounds to switch back | restored: adapt | restored/before (>= 0.9) | switches (kept) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def n(v, f="%.0f"):
            return "-" if v is None else f % v
        out.append(f"| {r['device']} at {r['share']:.2f} | {n(r['rounds_to_switch'], '%d')} | {n(r['switch_ms'] and r['switch_ms'] / 1000, '%.1f')} | "
                   f"{r['before']:.0f} | {r['adapt_slowed']:.0f} | {r['fixed_slowed']:.0f} | {r['fresh_slowed']:.0f} | "
                   f"{r['adapt_vs_fresh']:.2f} | {r['adapt_vs_fixed']:.2f}x | {n(r['rounds_to_switch_back'], '%d')} | "
                   f"{r['adapt_restored']:.0f} | {r['restored_vs_before']:.2f} | {r['switches']} ({r['kept']}) |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--asteroid", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--devices", default="nx-0,nano-0")
    p.add_argument("--rounds", type=int, default=400)
    p.add_argument("--slow-at", type=int, default=100)
    p.add_argument("--restore-at", type=int, default=250)
    p.add_argument("--share", type=float, default=0.3, help="the slowed device keeps this share of its CPU")
    p.add_argument("--fresh-rounds", type=int, default=100)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--flap", type=int, default=0, help="swing the device every FLAP rounds instead (0: one slow-down)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.flap > 0:
        results = []
        for device in args.devices.split(","):
            print(f"{device} swinging between all and {args.share} of its CPU every {args.flap} rounds "
                  f"from round {args.slow_at} to {args.restore_at}", flush=True)
            results.append(flap_scenario(args, device))
            with open(os.path.join(args.out, "flap.json"), "w") as f:
                json.dump(results, f, indent=2)
        text = (f"samples/s from round {args.slow_at}'s commit to round {args.restore_at}'s (wall time, switches "
                f"included); env C at "
                f"1000 Mbit/s, fmnist-resnet, batch 64, {args.rounds} rounds\n\n" + flap_table(results) + "\n")
        with open(os.path.join(args.out, "flap.md"), "w") as f:
            f.write(text)
        print(text)
        return
    results = []
    for device in args.devices.split(","):
        print(f"{device} slowed to {args.share} of its CPU at round {args.slow_at}, restored at {args.restore_at}",
              flush=True)
        results.append(scenario(args, device))
        with open(os.path.join(args.out, "adapt.json"), "w") as f:
            json.dump(results, f, indent=2)
    text = ("samples/s, median round; env C at 1000 Mbit/s, fmnist-resnet, batch 64, "
            f"{args.rounds} rounds; fresh plan: the slowed cluster profiled and planned, {args.fresh_rounds} rounds\n\n"
            + table(results) + "\n")
    with open(os.path.join(args.out, "adapt.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
