#!/usr/bin/python3
"""Recovery benchmark (issue 6): on an emulated env C with fmnist-cnn, kill a
device that runs a stage alone and, separately, a member of a group, and
measure for the lightweight re-plan, the heavy re-plan and two kinds of
stop-and-restart from the last checkpoint (the baseline): in the same
coordinator process (`--replan restart`: every stage respawned, the rounds
since the checkpoint redone) and, as the paper has it, by a new process
(`--replan stop`, then `asteroid train --resume` on the survivors):

  - the time from the kill to the first committed round after it, and to the
    first commit of a round that had not been committed before the kill
    (when training has really moved on);
  - the throughput after recovery, next to a fresh hpp plan on the survivors.

Every number comes from the run folders `asteroid train` leaves (faults.jsonl
for the kill time, metrics.jsonl for the commits, summary.json for the
failures). Writes DIR/recovery.json and DIR/recovery.md.

usage: recovery.py --asteroid build/bin/asteroid --out DIR [--rounds N] [--kill-at K]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runs import lines, run  # noqa: E402

MODEL = "fmnist-cnn"


def rounds_of(run_dir):
    return [m for m in lines(os.path.join(run_dir, "metrics.jsonl")) if "round" in m]


def median_throughput(rounds, batch, skip_until_round=None, first_index=0):
    ms = [r["ms"] for r in rounds[first_index:] if skip_until_round is None or r["round"] >= skip_until_round]
    return batch * 1000.0 / statistics.median(ms) if ms else float("nan")


def train(args, out_dir, extra, timeout, check=True):
    cmd = [args.asteroid, "train", "--model", MODEL, "--batch", "64", "--rounds", str(args.rounds),
           "--out", out_dir, "--no-plots", "--progress", "plain", "--test-samples", "2000", "--no-baseline"] + extra
    run(cmd, out_dir + ".log", timeout, check)
    return out_dir


def victims(plan):
    single = member = None
    for stage in plan["stages"]:
        ids = [d["id"] for d in stage["devices"]]
        if len(ids) == 1 and single is None and len(plan["stages"]) > 1:
            single = ids[0]
        if len(ids) > 1 and member is None:
            member = ids[-1]
    return {"single-device stage": single, "group member": member}


def recovery_figures(run_dir, batch, kill_round):
    faults = [f for f in lines(os.path.join(run_dir, "faults.jsonl")) if f.get("action") == "kill"]
    rounds = rounds_of(run_dir)
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    if not faults:
        raise RuntimeError(f"{run_dir}: no kill was logged")
    t_kill = faults[0]["t_s"]
    before = [r for r in rounds if r["t_s"] <= t_kill]
    after = [r for r in rounds if r["t_s"] > t_kill]
    last_before = max((r["round"] for r in before), default=-1)
    # The kill comes just before round kill_round starts; a round before it
    # may still commit after the kill (its replicas were on their way): that
    # commit owes nothing to the recovery and is not counted. The first
    # commit after the kill is then a replayed or redone round, and new
    # progress is the first commit of round kill_round or later.
    first_commit = next((r["t_s"] - t_kill for r in after if r["round"] >= kill_round or r["round"] <= last_before),
                        float("nan"))
    progress = next((r["t_s"] - t_kill for r in after if r["round"] >= kill_round), float("nan"))
    # Steady state after recovery: rounds from two after the kill on, once
    # replays are over (their first occurrence after the last replayed one).
    settled = [r for r in after if r["round"] >= kill_round + 2]
    failures = summary.get("failures", [])
    return {
        "kill_t_s": t_kill,
        "kill_to_first_commit_ms": first_commit * 1000,
        "kill_to_new_progress_ms": progress * 1000,
        "rounds_redone": sum(1 for r in after if r["round"] <= last_before),
        "samples_per_s_before": median_throughput(before, batch, first_index=5),
        "samples_per_s_after": median_throughput(settled, batch),
        "replan": failures[0]["replan"] if failures else "none",
        "detected_to_recovered_ms": failures[0].get("recovery_ms") if failures else None,
        "plan_after": failures[0].get("plan") if failures else "",
        "test_accuracy": summary.get("test_accuracy"),
    }


def stop_and_resume_figures(stopped_dir, resumed_dir, batch, kill_round):
    """The paper's stop-and-restart: the job stops at the failure (--replan
    stop) and a new `asteroid train --resume` process continues from the last
    checkpoint on the devices that are up. Times by wall clock (unix_s) across
    the two processes."""
    faults = [f for f in lines(os.path.join(stopped_dir, "faults.jsonl")) if f.get("action") == "kill"]
    if not faults:
        raise RuntimeError(f"{stopped_dir}: no kill was logged")
    kill = faults[0]["unix_s"]
    before = [r for r in rounds_of(stopped_dir) if r["unix_s"] <= kill]
    after = rounds_of(resumed_dir)
    last_before = max((r["round"] for r in before), default=-1)
    first = after[0]["unix_s"] - kill if after else float("nan")
    progress = next((r["unix_s"] - kill for r in after if r["round"] >= kill_round), float("nan"))
    replans = [m for m in lines(os.path.join(resumed_dir, "metrics.jsonl")) if m.get("event") == "replan"]
    summary = json.load(open(os.path.join(resumed_dir, "summary.json")))
    return {
        "kill_to_first_commit_ms": first * 1000,
        "kill_to_new_progress_ms": progress * 1000,
        "rounds_redone": sum(1 for r in after if r["round"] <= last_before),
        "samples_per_s_before": median_throughput(before, batch, first_index=5),
        "samples_per_s_after": median_throughput([r for r in after if r["round"] >= kill_round + 2], batch),
        "replan": "stop + resume",
        "plan_after": replans[0]["text"] if replans else "the checkpoint's plan",
        "test_accuracy": summary.get("test_accuracy"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asteroid", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=110)
    ap.add_argument("--kill-at", type=int, default=70)
    ap.add_argument("--checkpoint-every", type=int, default=20)
    ap.add_argument("--bandwidth", type=int, default=1000)
    ap.add_argument("--timeout", type=int, default=900)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    env = ["--env", "C", "--bandwidth", str(args.bandwidth)]
    started = time.time()

    print("fault-free hpp run on env C", flush=True)
    # The cost model's optimum, without the probe: a plan on several devices
    # with a single-device stage and a group (ranked and probed, the job may
    # train the best device alone, which leaves nothing to kill here).
    fresh = train(args, os.path.join(args.out, "fresh"),
                  env + ["--strategy", "hpp", "--rank", "model", "--probe-rounds", "0"], args.timeout)
    plan = json.load(open(os.path.join(fresh, "plan.json")))
    profile = os.path.join(fresh, "profile.json")
    batch = plan["batch"]
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": MODEL, "env": "C",
               "bandwidth_mbps": args.bandwidth, "rounds": args.rounds, "kill_at": args.kill_at,
               "checkpoint_every": args.checkpoint_every, "plan": plan["stages"],
               "fresh_samples_per_s": median_throughput(rounds_of(fresh), batch, first_index=5),
               "scenarios": []}
    cluster = json.load(open(os.path.join(fresh, "cluster.json")))

    for kind, victim in victims(plan).items():
        if victim is None:
            print(f"the hpp plan has no {kind}: skipped", flush=True)
            results["scenarios"].append({"scenario": kind, "skipped": "the plan has none"})
            continue
        # A fresh hpp plan on the survivors, on the same emulation.
        survivors = dict(cluster)
        survivors["devices"] = [d for d in cluster["devices"] if d["id"] != victim]
        survivors["links"] = [l for l in cluster.get("links", []) if victim not in (l["a"], l["b"])]
        survivors_file = os.path.join(args.out, f"survivors-{victim}.json")
        json.dump(survivors, open(survivors_file, "w"))
        cluster_dir = os.path.join(args.out, f"cluster-{victim}")
        run([args.asteroid, "cluster", "up", "--cluster", survivors_file, "--dir", cluster_dir],
            cluster_dir + ".log", 300)
        try:
            # Planned with the same profile as every other run here, so that
            # plans differ by the lost device only, not by profiling noise.
            survivors_plan = os.path.join(args.out, f"plan-without-{victim}.json")
            run([args.asteroid, "plan", "--cluster", os.path.join(cluster_dir, "cluster.json"), "--profile", profile,
                 "--batch", str(batch), "--microbatches", str(plan["microbatches"]), "--strategy", "hpp",
                 "--out", survivors_plan], survivors_plan + ".log", 300)
            fresh_survivors = train(args, os.path.join(args.out, f"fresh-without-{victim}"),
                                    ["--cluster", os.path.join(cluster_dir, "cluster.json"), "--plan", survivors_plan,
                                     "--profile", profile], args.timeout)
        finally:
            run([args.asteroid, "cluster", "down", "--dir", cluster_dir], cluster_dir + "-down.log", 120)
        fresh_after = median_throughput(rounds_of(fresh_survivors), batch, first_index=5)
        faults_file = os.path.join(args.out, f"kill-{victim}.json")
        json.dump([{"round": args.kill_at, "action": "kill", "device": victim}], open(faults_file, "w"))
        for mode in ["lightweight", "heavy", "restart"]:
            print(f"{kind} ({victim}) killed before round {args.kill_at}, {mode}", flush=True)
            # The fault-free run's plan and profile: every scenario starts from
            # the same plan, and re-plans use the same profile.
            run_dir = train(args, os.path.join(args.out, f"{victim}-{mode}"),
                            env + ["--plan", os.path.join(fresh, "plan.json"), "--profile", profile,
                                   "--faults", faults_file, "--replan", mode,
                                   "--checkpoint-every", str(args.checkpoint_every)], args.timeout)
            figures = recovery_figures(run_dir, batch, args.kill_at)
            figures.update({"scenario": kind, "device": victim, "mode": mode,
                            "fresh_plan_samples_per_s": fresh_after,
                            "after_over_fresh": figures["samples_per_s_after"] / fresh_after})
            results["scenarios"].append(figures)
            print("   ", json.dumps(figures), flush=True)

        # Stop-and-restart as the paper has it: a new process resumes from
        # the checkpoint on the survivors (the cluster outlives both jobs).
        print(f"{kind} ({victim}) killed before round {args.kill_at}, stop + resume", flush=True)
        cluster_dir = os.path.join(args.out, f"cluster-{victim}-resume")
        run([args.asteroid, "cluster", "up", "--env", "C", "--bandwidth", str(args.bandwidth), "--dir", cluster_dir],
            cluster_dir + ".log", 300)
        try:
            on_cluster = ["--cluster", os.path.join(cluster_dir, "cluster.json"), "--profile", profile]
            stopped = train(args, os.path.join(args.out, f"{victim}-stop"),
                            on_cluster + ["--plan", os.path.join(fresh, "plan.json"), "--faults", faults_file,
                                          "--replan", "stop", "--checkpoint-every", str(args.checkpoint_every)],
                            args.timeout, check=False)
            resumed = train(args, os.path.join(args.out, f"{victim}-resume"), on_cluster + ["--resume", stopped],
                            args.timeout)
        finally:
            run([args.asteroid, "cluster", "down", "--dir", cluster_dir], cluster_dir + "-down.log", 120)
        figures = stop_and_resume_figures(stopped, resumed, batch, args.kill_at)
        figures.update({"scenario": kind, "device": victim, "mode": "stop + resume",
                        "fresh_plan_samples_per_s": fresh_after,
                        "after_over_fresh": figures["samples_per_s_after"] / fresh_after})
        results["scenarios"].append(figures)
        print("   ", json.dumps(figures), flush=True)

    results["seconds"] = time.time() - started
    with open(os.path.join(args.out, "recovery.json"), "w") as f:
        json.dump(results, f, indent=1)
    rows = ["| scenario | recovery | kill → first commit | kill → new progress | rounds redone | "
            "samples/s after | fresh hpp plan on survivors | after / fresh |",
            "|---|---|---|---|---|---|---|---|"]
    by = {}
    for s in results["scenarios"]:
        if "skipped" in s:
            rows.append(f"| {s['scenario']} | (skipped: {s['skipped']}) | | | | | | |")
            continue
        by[(s["scenario"], s["mode"])] = s
        rows.append(f"| {s['scenario']} ({s['device']}) | {s['mode']} | {s['kill_to_first_commit_ms']:.0f} ms | "
                    f"{s['kill_to_new_progress_ms']:.0f} ms | {s['rounds_redone']} | {s['samples_per_s_after']:.0f} | "
                    f"{s['fresh_plan_samples_per_s']:.0f} | {s['after_over_fresh']:.2f} |")
    lines_out = [f"Recovery on env C ({args.bandwidth} Mbit/s), {MODEL}, batch 64, kill before round "
                 f"{args.kill_at}, checkpoints every {args.checkpoint_every} rounds; {results['date']}", ""] + rows
    for kind in ["single-device stage", "group member"]:
        light = by.get((kind, "lightweight"))
        if not light:
            continue
        parts = []
        for mode, name in [("restart", "an in-process restart from the checkpoint"),
                           ("stop + resume", "stop-and-restart by a new process")]:
            other = by.get((kind, mode))
            if other:
                parts.append(f"{other['kill_to_new_progress_ms'] / light['kill_to_new_progress_ms']:.1f}x sooner than "
                             f"{name} ({light['kill_to_new_progress_ms']:.0f} vs "
                             f"{other['kill_to_new_progress_ms']:.0f} ms)")
        lines_out.append("")
        lines_out.append(f"{kind}: lightweight resumes new progress " + " and ".join(parts) +
                         f", and runs at {100 * light['after_over_fresh']:.0f} % of a fresh plan.")
    text = "\n".join(lines_out) + "\n"
    open(os.path.join(args.out, "recovery.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        print("recovery benchmark failed:", e, file=sys.stderr)
        sys.exit(1)
