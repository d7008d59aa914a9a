#!/usr/bin/python3
"""Accuracy of the compressed wire (issue 11): for each model and each wire
policy, one epoch of training on three local nodes with a fixed two-stage
plan whose boundary (activations forward, gradients back) and whose group
all-reduce both use the policy's lossiest codec, the worst case the policy
allows. Same model, seed, data order and rounds in every run; only the wire
differs. Reports the final test accuracy (the whole test split) and its
difference to the exact wire, and plots the loss curves.

The nodes are plain `asteroid node` processes on 127.0.0.1 (no emulation:
accuracy does not depend on speed), on ports chosen at run time, stopped by
pid at the end, also on failure.

Writes DIR/accuracy.json, DIR/accuracy.md and DIR/loss.png.

usage: accuracy.py --asteroid build/bin/asteroid --out DIR [--models M,...]
                   [--policies exact,fp16,int8,int4] [--rounds N]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

LOSSIEST = {"exact": "fp32", "fp16": "bf16", "int8": "int8", "int4": "int4"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node on port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"node on port {port} did not listen within {timeout} s")


class Nodes:
    """Local node processes, stopped by pid."""

    def __init__(self, asteroid, ids, out):
        self.procs = []
        self.devices = []
        for i in ids:
            port = free_port()
            log = open(os.path.join(out, f"node-{i}.log"), "w")
            proc = subprocess.Popen([asteroid, "node", "--port", str(port), "--id", i], stdout=log,
                                    stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.devices.append({"id": i, "host": "127.0.0.1", "port": port, "memory_mb": 8192})
        for proc, d in zip(self.procs, self.devices):
            wait_listening(d["port"], proc)

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def layer_count(asteroid, model, out):
    """From `asteroid plan`-free means: the profile command's layer list."""
    path = os.path.join(out, f"layers-{model}.json")
    subprocess.run([asteroid, "profile", "--model", model, "--batches", "1", "--repeats", "1", "--out", path],
                   check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        return len(json.load(f)["layers"])


def plan_for(model_layers, codec, batch):
    cut = model_layers // 2
    half = batch // 4
    return {
        "strategy": "custom", "batch": batch, "microbatches": 2, "microbatch_size": batch // 2,
        "codec_block": 64,
        "stages": [
            {"layers": [0, cut], "devices": [{"id": "a", "samples": half}, {"id": "b", "samples": batch // 2 - half}],
             "to_next_codec": codec, "allreduce_codec": codec},
            {"layers": [cut, model_layers], "devices": [{"id": "c", "samples": batch // 2}],
             "allreduce_codec": "fp32"},
        ],
    }


def losses_of(run_dir):
    out = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                m = json.loads(line)
                if "round" in m:
                    out.append(m["loss"])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asteroid", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--models", default="fmnist-cnn,fmnist-resnet")
    p.add_argument("--policies", default="exact,fp16,int8,int4")
    p.add_argument("--rounds", type=int, default=0, help="0: one epoch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    policies = a.policies.split(",")
    for policy in policies:
        if policy not in LOSSIEST:
            sys.exit(f"unknown policy {policy}: one of {', '.join(LOSSIEST)}")
    results = {}
    nodes = Nodes(a.asteroid, ["a", "b", "c"], a.out)
    try:
        cluster = os.path.join(a.out, "cluster.json")
        with open(cluster, "w") as f:
            json.dump({"devices": nodes.devices, "default_bandwidth_mbps": 1000}, f)
        for model in a.models.split(","):
            layers = layer_count(a.asteroid, model, a.out)
            results[model] = {}
            for policy in policies:
                run_dir = os.path.join(a.out, f"{model}-{policy}")
                plan = os.path.join(a.out, f"plan-{model}-{policy}.json")
                with open(plan, "w") as f:
                    json.dump(plan_for(layers, LOSSIEST[policy], a.batch), f, indent=1)
                cmd = [a.asteroid, "train", "--cluster", cluster, "--plan", plan, "--model", model, "--batch",
                       str(a.batch), "--epochs", "1", "--out", run_dir, "--no-plots", "--no-baseline",
                       "--progress", "off", "--test-samples", "0"]
                if a.rounds > 0:
                    cmd += ["--rounds", str(a.rounds)]
                print(f"{model} / {policy} ({LOSSIEST[policy]} on the boundary and the all-reduce)", flush=True)
                t0 = time.time()
                with open(run_dir + ".log", "w") as log:
                    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=a.timeout).returncode
                if rc != 0:
                    results[model][policy] = {"error": f"exit {rc}, see {run_dir}.log"}
                    print(f"  failed: exit {rc}", flush=True)
                    continue
                with open(os.path.join(run_dir, "summary.json")) as f:
                    s = json.load(f)
                results[model][policy] = {"codec": LOSSIEST[policy], "test_accuracy": s["test_accuracy"],
                                          "final_loss": s["final_loss"], "rounds": s["rounds"],
                                          "wall_s": time.time() - t0, "losses": losses_of(run_dir)}
                print(f"  test accuracy {100 * s['test_accuracy']:.2f} %", flush=True)
    finally:
        nodes.stop()

    with open(os.path.join(a.out, "accuracy.json"), "w") as f:
        json.dump(results, f)
    rows = ["| model | policy | lossiest codec | rounds | test accuracy | vs exact (points) | final loss |",
            "|---|---|---|---|---|---|---|"]
    for model, by_policy in results.items():
        exact = by_policy.get("exact", {}).get("test_accuracy")
        for policy, r in by_policy.items():
            if "error" in r:
                rows.append(f"| {model} | {policy} | {LOSSIEST[policy]} | - | {r['error']} | | |")
                continue
            delta = "" if exact is None else f"{100 * (r['test_accuracy'] - exact):+.2f}"
            rows.append(f"| {model} | {policy} | {r['codec']} | {r['rounds']} | {100 * r['test_accuracy']:.2f} % | "
                        f"{delta} | {r['final_loss']:.4f} |")
    table = "\n".join(rows) + "\n"
    with open(os.path.join(a.out, "accuracy.md"), "w") as f:
        f.write(table)
    print(table)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (model, by_policy) in zip(axes[0], results.items()):
        for policy, r in by_policy.items():
            if "losses" not in r:
                continue
            ls = r["losses"]
            k = 25
            smooth = [sum(ls[max(0, i - k + 1):i + 1]) / len(ls[max(0, i - k + 1):i + 1]) for i in range(len(ls))]
            ax.plot(smooth, label=f"{policy} ({r['codec']}): {100 * r['test_accuracy']:.2f} %")
        ax.set_title(f"{model}: training loss (moving average of 25 rounds)")
        ax.set_xlabel("round")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "loss.png"), dpi=110)


if __name__ == "__main__":
    main()
