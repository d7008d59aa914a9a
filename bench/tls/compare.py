#!/usr/bin/env python3
"""What mutual TLS costs the default job (docs/security.md, "What TLS costs").

Brings up the same emulated preset twice, once with the cluster's own
certificates (the default) and once with --no-tls, plans the default job
once on the TLS cluster (its cluster plan, also when the probe keeps the
best device alone), then trains that same plan (same profile) on both,
alternating plain, TLS, plain, TLS, ... so that the machine's drift hits
both alike. Prints a markdown table of samples/s after the warm-up rounds
and the TLS/plain ratio, measured in this run, and writes results.json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(cmd, log_path, timeout):
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # this script's own child and its group
            p.wait()
            return -9


def tail(path, n=15):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--asteroid", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--env", default="C")
    p.add_argument("--bandwidth", type=int, default=1000)
    p.add_argument("--model", default="fmnist-resnet")
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--pairs", type=int, default=3, help="plain/TLS pairs of runs")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-tls-")  # clusters and run folders; only results.json stays
    clusters = {"tls": os.path.join(work, "cluster-tls"), "plain": os.path.join(work, "cluster-plain")}
    up = {}
    try:
        for kind, d in clusters.items():
            cmd = [a.asteroid, "cluster", "up", "--env", a.env, "--bandwidth", str(a.bandwidth), "--dir", d]
            if kind == "plain":
                cmd.append("--no-tls")
            if run(cmd, d + ".up.log", 300) != 0:
                sys.exit(f"cluster up ({kind}) failed:\n" + tail(d + ".up.log"))
            up[kind] = d
        planned = os.path.join(work, "planned")
        common = ["--model", a.model, "--progress", "plain", "--baseline-rounds", "0", "--no-plots"]
        if run([a.asteroid, "train", "--cluster", os.path.join(clusters["tls"], "cluster.json"), "--rounds", "10",
                "--out", planned, *common], planned + ".log", 1800) != 0:
            sys.exit("planning the default job failed:\n" + tail(planned + ".log"))
        # The cluster plan: when the probe kept the best device alone, the
        # plan it compared (plan-candidate.json), or nothing would cross a link.
        plan_file = os.path.join(planned, "plan-candidate.json")
        if not os.path.exists(plan_file):
            plan_file = os.path.join(planned, "plan.json")
        given = ["--plan", plan_file, "--profile", os.path.join(planned, "profile.json")]
        results = {"tls": [], "plain": []}
        for i in range(a.pairs):
            for kind in ("plain", "tls"):
                out = os.path.join(work, f"{kind}-{i}")
                rc = run([a.asteroid, "train", "--cluster", os.path.join(clusters[kind], "cluster.json"), "--rounds",
                          str(a.rounds), "--out", out, *given, *common], out + ".log", 1800)
                if rc != 0:
                    sys.exit(f"{kind} run {i} failed:\n" + tail(out + ".log"))
                with open(os.path.join(out, "summary.json")) as f:
                    s = json.load(f)
                results[kind].append(s.get("samples_per_s_after_round_5") or s["samples_per_s"])
                print(f"  {kind} {i}: {results[kind][-1]:.1f} samples/s", flush=True)
        with open(plan_file) as f:
            stages = json.load(f)["stages"]
        plan = " | ".join("[{},{}) {}".format(*s["layers"], "+".join(d["id"] for d in s["devices"])) for s in stages)
        med = {k: statistics.median(v) for k, v in results.items()}
        report = {"env": a.env, "bandwidth": a.bandwidth, "model": a.model, "rounds": a.rounds, "plan": plan,
                  "samples_per_s": results, "median": med, "tls_over_plain": med["tls"] / med["plain"],
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg()[0]}
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nThe default job with and without TLS (env {a.env} at {a.bandwidth} Mbit/s, {a.model}, {plan}; "
              f"samples/s after round 5 of {a.rounds}, {a.pairs} runs each, alternating)\n")
        print("| transport | runs (samples/s) | median |\n|---|---|---|")
        for kind, label in (("plain", "plain TCP (--no-tls)"), ("tls", "mutual TLS (the default)")):
            print(f"| {label} | {', '.join(f'{x:.0f}' for x in results[kind])} | {med[kind]:.0f} |")
        print(f"\nTLS / plain: {report['tls_over_plain']:.2f} (load average {report['loadavg']:.1f})")
    finally:
        for d in up.values():
            run([a.asteroid, "cluster", "down", "--dir", d], d + ".down.log", 120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
