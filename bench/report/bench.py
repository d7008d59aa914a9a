#!/usr/bin/python3
"""End-to-end benchmark: Asteroid's hpp against dp, pp, the best single device
and PyTorch DDP on the emulated clusters (docs/benchmarks.md).

    /usr/bin/python3 bench/report/bench.py --quick            # < 15 minutes
    /usr/bin/python3 bench/report/bench.py --full             # every env, bandwidth and model
    /usr/bin/python3 bench/report/bench.py --tta-only         # time to accuracy alone
    /usr/bin/python3 bench/report/bench.py --report DIR       # table and plots again from DIR/results.json

For every (env, bandwidth) the cluster is brought up once (`asteroid cluster
up`); for every model, on that cluster:

1. hpp: `asteroid train --cluster` profiles the model on every node, times
   the links, plans and trains; its profile.json and measured cluster.json
   are then used for every other strategy, so all plans come from one
   profile;
2. dp, pp: `asteroid plan --strategy dp|pp --search-microbatches` from that
   profile, trained with `asteroid train --plan`;
3. single: the best device alone (a one-device plan for every device, the
   best by the model), trained on its node;
4. hpp+FT: hpp again with the runtime's default fault tolerance (every
   single-device stage replicates its state to a neighbour every round);
   1-3 run with --replicate-every 0, as DDP, which replicates nothing;
5. DDP: bench/ddp/ddp_train.py, one rank per device through `asteroid
   cluster exec` (same cgroup, namespace and links as the device's node);
6. every device alone: `asteroid train --strategy single` in-process, run as
   each device (`cluster exec`), all devices at once: the denominator of η.

Throughput is batch / median round time over the committed rounds after the
warm-up (metrics.jsonl "ms"; DDP: rank 0's round times). Raw run folders go
to the work directory (runs/bench/<stamp>), the results (results.json,
report.md, PNG plots) to the results directory (bench/results/<stamp>).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import analyze  # noqa: E402

PYTHON = "/usr/bin/python3"
DDP_SCRIPT = os.path.join(ROOT, "bench", "ddp", "ddp_train.py")
# The same glibc settings as Asteroid's processes (compute/memory_reuse.h):
# freed tensor memory stays in the process, so the baseline pays no page
# faults that Asteroid does not.
DDP_ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(0x7fffffff))

# Per model: batch, rounds (quick, full), warm-up rounds, optimizer, lr,
# profiled batch sizes and repeats, rounds of the per-device single runs;
# target_rounds (quick, full): rounds of hpp, hpp+FT and the best device
# alone, the runs the targets compare (20 rounds of fmnist, about 2 s of
# training, measured the same plan at 438 and 1174 samples/s on a shared
# machine; default: rounds).
MODELS = {
    "fmnist-cnn": dict(batch=64, rounds=(20, 30), target_rounds=(80, 120), warmup=3, optimizer="momentum", lr=0.05,
                       profile_batches="1,2,4,8,16,32,64", profile_repeats=3, alone_rounds=8,
                       test_samples=1000),
    "fmnist-resnet": dict(batch=64, rounds=(20, 30), target_rounds=(80, 120), warmup=3, optimizer="momentum", lr=0.05,
                          profile_batches="1,2,4,8,16,32,64", profile_repeats=3, alone_rounds=6,
                          test_samples=1000),
    # Slow on this CPU (tens of samples/s at full speed): small batches, few rounds.
    "mobilenetv2": dict(batch=32, rounds=(6, 8), warmup=2, optimizer="momentum", lr=0.01,
                        profile_batches="1,2,4,8,16,32", profile_repeats=2, alone_rounds=3,
                        test_samples=100),
    "resnet18": dict(batch=32, rounds=(6, 8), warmup=2, optimizer="momentum", lr=0.05,
                     profile_batches="1,2,4,8,16,32", profile_repeats=2, alone_rounds=3,
                        test_samples=100),
    "bert-small": dict(batch=16, rounds=(5, 6), warmup=2, optimizer="adam", lr=0.0001,
                       profile_batches="1,2,4,8,16", profile_repeats=2, alone_rounds=3,
                       test_samples=100),
}
ALL_ENVS = ["A", "B", "C", "D"]
ALL_BANDWIDTHS = [100, 1000]
STRATEGIES = ["hpp", "dp", "pp", "single", "hpp_ft", "ddp"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------- processes


def run(cmd, log_path, timeout, env=None):
    """Runs cmd (its own session) with stdout+stderr to log_path; on timeout
    SIGTERM, then SIGKILL, to its process group only. Returns (rc, seconds)."""
    t0 = time.time()
    with open(log_path, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                             cwd=ROOT)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            out.write(f"\n[bench] timeout after {timeout:.0f} s: stopping pid {p.pid}\n")
            stop_group(p)
            rc = "timeout"
    return rc, time.time() - t0


def stop_group(p, grace=10):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def read_json(path):
    """The JSON object in path, or None (missing, empty or torn: a failed run)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tail(path, n=12):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- cluster


class Cluster:
    """An emulated cluster this benchmark brought up (and brings down)."""

    def __init__(self, asteroid, env, bandwidth, directory):
        self.asteroid, self.env, self.bandwidth, self.dir = asteroid, env, bandwidth, directory

    def up(self):
        if os.path.exists(os.path.join(self.dir, "nodes.json")):
            self.down()
        os.makedirs(os.path.dirname(self.dir), exist_ok=True)
        rc, _ = run([self.asteroid, "cluster", "up", "--env", self.env, "--bandwidth", str(self.bandwidth), "--dir",
                     self.dir], self.dir + ".up.log", 180)
        if rc != 0:
            raise RuntimeError(f"cluster up failed (env {self.env}, {self.bandwidth} Mbit/s):\n"
                               + tail(self.dir + ".up.log"))
        with open(os.path.join(self.dir, "nodes.json")) as f:
            self.nodes = json.load(f)
        with open(os.path.join(self.dir, "cluster.json")) as f:
            self.cluster = json.load(f)
        self.devices = [d["id"] for d in self.cluster["devices"]]
        return self

    def down(self):
        run([self.asteroid, "cluster", "down", "--dir", self.dir], self.dir + ".down.log", 120)

    @property
    def cluster_file(self):
        return os.path.join(self.dir, "cluster.json")

    def node(self, device):
        return next(n for n in self.nodes["nodes"] if n["id"] == device)

    def address(self, device):
        return next(d["host"] for d in self.cluster["devices"] if d["id"] == device)

    def budget_bytes(self, device):
        return int(next(d["memory_mb"] for d in self.cluster["devices"] if d["id"] == device) * 1048576)

    def reset_memory_peaks(self):
        """Zero every device cgroup's peak (cgroup v1) and every node's VmHWM."""
        for n in self.nodes["nodes"]:
            mem = n.get("cgroup_memory")
            if mem and os.path.exists(os.path.join(mem, "memory.max_usage_in_bytes")):
                try:
                    with open(os.path.join(mem, "memory.max_usage_in_bytes"), "w") as f:
                        f.write("0")
                except OSError:
                    pass
            try:
                with open(f"/proc/{n['pid']}/clear_refs", "w") as f:
                    f.write("5")  # resets the peak resident set size
            except OSError:
                pass

    def memory_peaks(self):
        """Per device: the cgroup's peak usage (v1 max_usage / v2 memory.peak,
        page cache included) and the node process's VmHWM, bytes."""
        out = {}
        for n in self.nodes["nodes"]:
            rec = {"budget_bytes": self.budget_bytes(n["id"])}
            mem = n.get("cgroup_memory")
            for name in ("memory.max_usage_in_bytes", "memory.peak"):
                if mem and os.path.exists(os.path.join(mem, name)):
                    try:
                        with open(os.path.join(mem, name)) as f:
                            rec["cgroup_peak_bytes"] = int(f.read().strip())
                    except (OSError, ValueError):
                        pass
                    break
            try:
                with open(f"/proc/{n['pid']}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            rec["node_peak_rss_bytes"] = int(line.split()[1]) * 1024
            except OSError:
                pass
            out[n["id"]] = rec
        return out


# --------------------------------------------------------------------------- one model on one cluster


class Bench:
    def __init__(self, args):
        self.a = args
        self.asteroid = args.asteroid
        self.port = 29500 + (os.getpid() % 200) * 2

    def model_options(self, model):
        m = MODELS[model]
        return ["--model", model, "--batch", str(m["batch"]), "--optimizer", m["optimizer"], "--lr", str(m["lr"])]

    def rounds(self, model, key="rounds"):
        if self.a.rounds:
            return self.a.rounds
        m = MODELS[model]
        return m.get(key, m["rounds"])[0 if self.a.quick else 1]

    def warmup(self, model):
        return self.a.warmup if self.a.warmup is not None else MODELS[model]["warmup"]

    def train(self, cluster, model, out, extra, rounds, timeout, test_samples=None):
        if test_samples is None:
            test_samples = MODELS[model]["test_samples"]
        cmd = [self.asteroid, "train", "--cluster", cluster.cluster_file, *self.model_options(model),
               "--rounds", str(rounds), "--out", out, "--progress", "plain", "--no-plots",
               "--test-samples", str(test_samples), "--heartbeat-deadline", str(self.a.heartbeat_deadline),
               "--no-baseline", *extra]
        os.makedirs(out, exist_ok=True)
        cluster.reset_memory_peaks()
        load = loadavg()
        rc, secs = run(cmd, os.path.join(out, "train.log"), timeout)
        res = {"rc": rc, "wall_s": secs, "load_before": load, "memory": cluster.memory_peaks(), "dir": out}
        if rc != 0:
            res["error"] = f"asteroid train exited with {rc}: " + tail(os.path.join(out, "train.log"), 6)
        return res

    def collect(self, res, model, batch):
        """Throughput, prediction, breakdown and plan of a finished Asteroid run."""
        out = res["dir"]
        mpath = os.path.join(out, "metrics.jsonl")
        if not os.path.exists(mpath):
            res.setdefault("error", "no metrics.jsonl")
            return res
        rows = analyze.read_metrics(mpath)
        w = self.warmup(model)
        ms = [r["ms"] for r in rows]
        res["round_ms"] = ms
        res["rounds"] = len(rows)
        if not rows:
            res.setdefault("error", "no committed round")
            return res
        res["samples_per_s"] = analyze.median_throughput(ms, batch, w)
        st = analyze.steady(ms, w)
        res["samples_per_s_mean"] = batch * len(st) * 1000.0 / sum(st)
        res["train_s"] = rows[-1].get("t_s")
        spath = os.path.join(out, "summary.json")
        s = read_json(spath)
        if s:
            res["predicted_samples_per_s"] = s.get("predicted_samples_per_s")
            res["test_accuracy"] = s.get("test_accuracy")
            res["best_single_device"] = s.get("best_single_device")
            res["timings_s"] = s.get("timings_s")
        ppath = os.path.join(out, "plan.json")
        plan = read_json(ppath)
        if plan:
            res["plan"] = analyze.plan_text(plan)
            probe = (s or {}).get("probe")
            if probe:
                # The job measured the planner's plan against the best device
                # alone before training (docs/default-job.md step 3).
                res["probe"] = probe
                res["plan"] += (f" (probe: plan {probe['plan_samples_per_s']:.0f}, alone "
                                f"{probe['single_samples_per_s']:.0f}"
                                f"{': trained alone; candidate ' + analyze.plan_text(read_json(os.path.join(out, 'plan-candidate.json'))) if probe['switched_to_single'] else ''})")
            res["plan_devices"] = [d["id"] for s in plan.get("stages", []) for d in s.get("devices", [])]
            res["planned_memory"] = {m["id"]: m["used_bytes"] for m in plan.get("memory", [])}
            if not res.get("predicted_samples_per_s") and plan.get("predicted_round_ms"):
                res["predicted_samples_per_s"] = plan["batch"] * 1000.0 / plan["predicted_round_ms"]
        tpath = os.path.join(out, "trace.json")
        if os.path.exists(tpath) and os.path.getsize(tpath) > 0:
            steady_rounds = {r["round"] for r in rows[w:]} if len(rows) > w else {r["round"] for r in rows}
            per, summ = analyze.trace_breakdown(analyze.load_trace(tpath), steady_rounds)
            res["breakdown_ms"] = per
            res["breakdown"] = summ
            n = max(1, summ["rounds"])
            res["trace_round_ms"] = summ["window_ms"] / n
            steady_ms = [r["ms"] for r in rows if r["round"] in steady_rounds]
            if steady_ms:
                res["runtime_overhead_ms"] = sum(steady_ms) / len(steady_ms) - res["trace_round_ms"]
        return res

    def plan(self, hpp_dir, strategy, out, model, extra_cluster=None):
        """`asteroid plan` from the hpp run's profile and measured cluster."""
        m = MODELS[model]
        os.makedirs(out, exist_ok=True)
        cluster_file = extra_cluster or os.path.join(hpp_dir, "cluster.json")
        path = os.path.join(out, "plan-in.json")
        cmd = [self.asteroid, "plan", "--cluster", cluster_file, "--profile", os.path.join(hpp_dir, "profile.json"),
               "--batch", str(m["batch"]), "--search-microbatches", "--strategy", strategy,
               "--optimizer", m["optimizer"], "--out", path, "--explain"]
        rc, _ = run(cmd, os.path.join(out, f"plan-{os.path.basename(cluster_file)}.log"), 300)
        if rc != 0 or not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def single_plan(self, hpp_dir, out, model):
        """The best device alone: a one-device hpp plan for every device, the fastest by the model."""
        with open(os.path.join(hpp_dir, "cluster.json")) as f:
            c = json.load(f)
        best = None
        for d in c["devices"]:
            one = dict(c)
            one["devices"] = [d]
            one["links"] = []
            os.makedirs(out, exist_ok=True)
            cf = os.path.join(out, f"cluster-{d['id']}.json")
            with open(cf, "w") as f:
                json.dump(one, f)
            p = self.plan(hpp_dir, "hpp", os.path.join(out, "candidates", d["id"]), model, extra_cluster=cf)
            if p and (best is None or p["predicted_round_ms"] < best[1]["predicted_round_ms"]):
                best = (d["id"], p)
        if best is None:
            return None
        p = best[1]
        p["strategy"] = "single"
        path = os.path.join(out, "plan-in.json")
        with open(path, "w") as f:
            json.dump(p, f, indent=1)
        return best[0]

    def ddp(self, cluster, model, out, rounds, timeout, extra=(), test_samples=None):
        os.makedirs(out, exist_ok=True)
        m = MODELS[model]
        world = len(cluster.devices)
        self.port += 1
        result = os.path.join(out, "result.json")
        if os.path.exists(result):
            os.remove(result)
        cluster.reset_memory_peaks()
        load = loadavg()
        procs = []
        t0 = time.time()
        for rank, dev in enumerate(cluster.devices):
            cmd = [self.asteroid, "cluster", "exec", "--dir", cluster.dir, "--device", dev, "--", PYTHON, DDP_SCRIPT,
                   "--model", model, "--batch", str(m["batch"]), "--optimizer", m["optimizer"], "--lr", str(m["lr"]),
                   "--rounds", str(rounds), "--warmup", str(self.warmup(model)), "--rank", str(rank),
                   "--world-size", str(world), "--master-addr", cluster.address(cluster.devices[0]),
                   "--master-port", str(self.port), "--timeout", str(min(timeout, 1800)), "--out", result,
                   "--test-samples", str(test_samples or m["test_samples"]), *extra]
            logf = open(os.path.join(out, f"rank{rank}.log"), "w")
            logf.write("$ " + " ".join(cmd) + "\n")
            logf.flush()
            procs.append((subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                           cwd=ROOT, env=DDP_ENV), logf))
        rcs = []
        for p, logf in procs:
            left = max(1.0, timeout - (time.time() - t0))
            try:
                rcs.append(p.wait(timeout=left))
            except subprocess.TimeoutExpired:
                rcs.append("timeout")
                for q, _ in procs:
                    if q.poll() is None:
                        stop_group(q, grace=5)
            logf.close()
        res = {"rc": rcs, "wall_s": time.time() - t0, "load_before": load, "memory": cluster.memory_peaks(),
               "dir": out}
        if rcs and rcs[0] == 0 and os.path.exists(result):
            if any(rc != 0 for rc in rcs):
                res["warning"] = f"ranks exited with {rcs} after rank 0 wrote its result"
            with open(result) as f:
                r = json.load(f)
            res.update({"samples_per_s": r["samples_per_s"], "samples_per_s_mean": r["samples_per_s_mean"],
                        "round_ms": r["round_ms"], "rounds": r["rounds"], "train_s": r["train_seconds"],
                        "setup_s": r["setup_seconds"], "import_s": r["import_seconds"],
                        "test_accuracy": (r.get("final_eval") or {}).get("accuracy"),
                        "ranks": r["ranks"], "reached_round": r.get("reached_round"), "evals": r.get("evals"),
                        "final_accuracy": (r["evals"][-1]["accuracy"] if r.get("evals") else
                                           (r.get("final_eval") or {}).get("accuracy")),
                        "time_to_target_s": r.get("time_to_target_s")})
            for rk in r["ranks"]:
                res["memory"].setdefault(rk["device"], {})["process_peak_rss_bytes"] = rk["peak_rss_bytes"]
        else:
            res["error"] = f"ddp ranks exited with {rcs}: " + tail(os.path.join(out, "rank0.log"), 6)
        return res

    def alone(self, cluster, model, out, timeout):
        """Every device's own single-device throughput: Asteroid's in-process
        trainer run as each device (cgroup, namespace), all devices at once."""
        m = MODELS[model]
        os.makedirs(out, exist_ok=True)
        rounds = m["alone_rounds"] + (1 if m["alone_rounds"] < 5 else 3)
        procs = []
        t0 = time.time()
        for dev in cluster.devices:
            cmd = [self.asteroid, "cluster", "exec", "--dir", cluster.dir, "--device", dev, "--", self.asteroid,
                   "train", "--strategy", "single", *self.model_options(model), "--rounds", str(rounds),
                   "--metrics", os.path.join(out, f"{dev}.jsonl"), "--summary", os.path.join(out, f"{dev}.json"),
                   "--progress", "off", "--test-samples", "10"]
            logf = open(os.path.join(out, f"{dev}.log"), "w")
            procs.append((dev, subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                                cwd=ROOT), logf))
        res = {"samples_per_s": {}, "wall_s": None}
        for dev, p, logf in procs:
            try:
                p.wait(timeout=max(1.0, timeout - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                stop_group(p, grace=5)
            logf.close()
            mp = os.path.join(out, f"{dev}.jsonl")
            if os.path.exists(mp):
                ms = [r["ms"] for r in analyze.read_metrics(mp)]
                skip = 1 if m["alone_rounds"] < 5 else 3
                if len(ms) > skip:
                    res["samples_per_s"][dev] = analyze.median_throughput(ms, m["batch"], skip)
        res["wall_s"] = time.time() - t0
        return res

    def timeout(self, model, rounds):
        per_round = {"fmnist-cnn": 3, "fmnist-resnet": 5, "mobilenetv2": 60, "resnet18": 90, "bert-small": 150}[model]
        profile = {"fmnist-cnn": 120, "fmnist-resnet": 180, "mobilenetv2": 900, "resnet18": 900,
                   "bert-small": 1800}[model]
        return profile + 60 + per_round * rounds

    def run_model(self, cluster, model, work, strategies):
        m = MODELS[model]
        batch = m["batch"]
        rounds = self.rounds(model)
        key_rounds = self.rounds(model, "target_rounds")
        to = self.timeout(model, max(rounds, key_rounds))
        cfg = {"env": cluster.env, "bandwidth": cluster.bandwidth, "model": model, "batch": batch, "rounds": rounds, "target_rounds": key_rounds,
               "warmup": self.warmup(model), "optimizer": m["optimizer"], "lr": m["lr"], "runs": {}, "errors": {},
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "devices": cluster.devices}
        base = os.path.join(work, f"{cluster.env}-{cluster.bandwidth}", model)
        norep = ["--replicate-every", "0"]
        profile_opts = ["--profile-batches", m["profile_batches"], "--profile-repeats", str(m["profile_repeats"])]
        hpp_dir = os.path.join(base, "hpp")
        given = ["--profile", os.path.join(hpp_dir, "profile.json")]

        def planned(s):
            d = os.path.join(base, s)
            p = self.plan(hpp_dir, s, d, model)
            if p is None:
                logs = glob.glob(os.path.join(d, "plan-*.log"))
                return {"error": f"no {s} plan fits: " + (tail(logs[0], 4) if logs else "")}
            r = self.train(cluster, model, d, ["--plan", os.path.join(d, "plan-in.json"), *given, *norep], rounds, to)
            return self.collect(r, model, batch)

        def single():
            d = os.path.join(base, "single")
            dev = self.single_plan(hpp_dir, d, model)
            if not dev:
                return {"error": "the model fits on no single device"}
            log(f"    the best device alone: {dev}")
            r = self.train(cluster, model, d, ["--plan", os.path.join(d, "plan-in.json"), *given, *norep], key_rounds, to)
            r = self.collect(r, model, batch)
            r["device"] = dev
            return r

        def hpp_ft():
            r = self.train(cluster, model, os.path.join(base, "hpp_ft"),
                           ["--plan", os.path.join(hpp_dir, "plan.json"), *given], key_rounds, to)
            return self.collect(r, model, batch)

        # hpp+FT right after hpp: the two runs compared share the nodes'
        # history (docs/benchmarks.md, Findings).
        steps = [("hpp_ft", "hpp+FT (replication on, the runtime's default)", hpp_ft),
                 ("dp", "dp", lambda: planned("dp")), ("pp", "pp", lambda: planned("pp")),
                 ("single", "single (the best device alone)", single),
                 ("ddp", "PyTorch DDP", lambda: self.ddp(cluster, model, os.path.join(base, "ddp"), rounds, to))]

        log(f"env {cluster.env} @ {cluster.bandwidth} Mbit/s, {model}: hpp (profiling on every node)")
        try:
            r = self.train(cluster, model, hpp_dir, ["--strategy", "hpp", *norep, *profile_opts], key_rounds, to)
            cfg["runs"]["hpp"] = self.collect(r, model, batch)
        except Exception as e:  # a bug here must not stop the sweep
            cfg["runs"]["hpp"] = {"error": f"{type(e).__name__}: {e}"}
        profile = read_json(os.path.join(hpp_dir, "profile.json"))
        if profile:
            cfg["profile_throughput"] = analyze.per_device_throughput(profile, batch)
            for key, label, fn in steps:
                if key not in strategies:
                    continue
                log(f"  {label}")
                try:
                    cfg["runs"][key] = fn()
                except Exception as e:
                    cfg["runs"][key] = {"error": f"{type(e).__name__}: {e}"}
        if "alone" in strategies:
            log("  every device alone (in-process single-device training as each device, all at once)")
            try:
                cfg["alone"] = self.alone(cluster, model, os.path.join(base, "alone"), to)
            except Exception as e:
                cfg["alone"] = {"error": f"{type(e).__name__}: {e}", "samples_per_s": {}}
        derive(cfg)
        cfg["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return cfg


def derive(cfg):
    """Throughputs, ratios, η, prediction error, bubble fraction of one configuration."""
    runs = cfg["runs"]
    cfg["throughput"] = {s: r.get("samples_per_s") for s, r in runs.items()}
    for s, r in runs.items():
        if r.get("error"):
            cfg["errors"][s] = r["error"]
    hpp = cfg["throughput"].get("hpp")
    cfg["predicted_hpp"] = runs.get("hpp", {}).get("predicted_samples_per_s")
    cfg["prediction_error"] = analyze.prediction_error(hpp, cfg["predicted_hpp"])
    cfg["prediction_error_by_strategy"] = {
        s: analyze.prediction_error(r.get("samples_per_s"), r.get("predicted_samples_per_s")) for s, r in runs.items()
        if s != "ddp"}
    alone = (cfg.get("alone") or {}).get("samples_per_s") or {}
    cfg["eta_measured"] = analyze.eta(hpp, alone) if hpp and len(alone) == len(cfg["devices"]) else None
    cfg["eta_profile"] = analyze.eta(hpp, cfg.get("profile_throughput") or {}) if hpp else None
    cfg["eta"] = cfg["eta_measured"] if cfg["eta_measured"] is not None else cfg["eta_profile"]
    cfg["bubble_fraction"] = {s: (r.get("breakdown") or {}).get("bubble_fraction") for s, r in runs.items()}
    cfg["plan_text"] = {s: r.get("plan") for s, r in runs.items() if r.get("plan")}
    t = cfg["throughput"]
    cfg["ratios"] = {k: analyze.ratio(hpp, t.get(k)) for k in ("dp", "pp", "ddp", "single")}
    cfg["ratios"]["hpp_ft/ddp"] = analyze.ratio(t.get("hpp_ft"), t.get("ddp"))


# --------------------------------------------------------------------------- time to accuracy


def asteroid_until(b, cluster, model, base, first_args, resume_args, first_rounds, step, max_rounds, target, timeout):
    """Trains `first_rounds`, then `step` more at a time (--resume from the
    checkpoint) until the test accuracy at the end of a segment reaches
    `target`. Training time = the segments' committed-round time."""
    m = MODELS[model]
    segs = []
    d0 = os.path.join(base, "seg0")
    r = b.train(cluster, model, d0, [*first_args, "--checkpoint-every", str(step)], first_rounds, timeout,
                test_samples=0)
    b.collect(r, model, m["batch"])
    segs.append(r)
    rounds = first_rounds
    while (not r.get("error") and r.get("test_accuracy") is not None and r["test_accuracy"] < target
           and rounds + step <= max_rounds):
        rounds += step
        r = b.train(cluster, model, os.path.join(base, f"seg{len(segs)}"),
                    ["--resume", d0, "--checkpoint-every", str(step), *resume_args], rounds, timeout, test_samples=0)
        b.collect(r, model, m["batch"])
        segs.append(r)
    first = segs[0]
    acc = segs[-1].get("test_accuracy")
    return {"rounds": rounds, "reached": acc is not None and acc >= target, "test_accuracy": acc,
            "train_s": sum(x.get("train_s") or 0 for x in segs),
            "wall_s": sum(x.get("wall_s") or 0 for x in segs),
            "setup_s": sum((x.get("wall_s") or 0) - (x.get("train_s") or 0) for x in segs),
            "segments": [{"rounds": x.get("rounds"), "test_accuracy": x.get("test_accuracy"), "train_s": x.get("train_s"),
                          "wall_s": x.get("wall_s"), "load_before": x.get("load_before"), "error": x.get("error")}
                         for x in segs],
            "samples_per_s": first.get("samples_per_s"), "plan": first.get("plan"), "timings_s": first.get("timings_s"),
            "load_before": first.get("load_before"), "error": next((x["error"] for x in segs if x.get("error")), None)}


def time_to_accuracy(b, work, env="C", bandwidth=100, model="fmnist-cnn", target=0.85, every=25, max_rounds=3000):
    """Time to `target` test accuracy, evaluated every `every` rounds.

    A full-speed reference run (bench/ddp, one process: the same weights as
    Asteroid's single-device training) gives the accuracy curve. Each
    strategy then trains on the emulated cluster from the first evaluation
    point where the reference is within 2 points of the target, then `every`
    rounds at a time (Asteroid: --checkpoint-every and --resume; DDP: its own
    evaluation with the clock paused) until its own test accuracy (10,000
    test samples) reaches the target. Every strategy computes the same
    mini-batch gradients, but float sums in a different order drift apart
    over hundreds of rounds, so each is evaluated on its own."""
    out = {"env": env, "bandwidth": bandwidth, "model": model, "target": target, "every": every, "runs": {}}
    d = os.path.join(work, "tta")
    os.makedirs(d, exist_ok=True)
    m = MODELS[model]
    log(f"time to accuracy: reference curve of {model} (full speed, every {every} rounds)")
    ref = os.path.join(d, "reference.json")
    cmd = [PYTHON, DDP_SCRIPT, "--no-ddp", "--model", model, "--batch", str(m["batch"]), "--optimizer", m["optimizer"],
           "--lr", str(m["lr"]), "--rounds", str(max_rounds), "--eval-every", str(every), "--target-acc", str(target),
           "--out", ref]
    rc, secs = run(cmd, os.path.join(d, "reference.log"), 3600)
    if rc != 0 or not os.path.exists(ref):
        out["error"] = "reference run failed: " + tail(os.path.join(d, "reference.log"))
        return out
    with open(ref) as f:
        r = json.load(f)
    out["reference"] = {"evals": r["evals"], "reached_round": r["reached_round"], "train_s": r["time_to_target_s"]}
    if not r["reached_round"]:
        out["error"] = f"{model} did not reach {target} in {max_rounds} rounds"
        return out
    first = next(e["round"] for e in r["evals"] if e["accuracy"] >= target - 0.02)
    limit = r["reached_round"] + 12 * every
    out["first_check"], out["max_rounds"] = first, limit
    log(f"  reference: {target:.0%} after {r['reached_round']} rounds; every strategy from round {first}, "
        f"then every {every} (at most {limit})")
    cluster = Cluster(b.asteroid, env, bandwidth, os.path.join(work, "clusters", f"tta-{env}-{bandwidth}"))
    cluster.up()
    try:
        to = 180 + 4 * limit
        hpp_dir = os.path.join(d, "hpp", "seg0")
        prof = ["--profile-batches", m["profile_batches"], "--profile-repeats", str(m["profile_repeats"])]
        norep = ["--replicate-every", "0"]
        log("  hpp")
        out["runs"]["hpp"] = asteroid_until(b, cluster, model, os.path.join(d, "hpp"),
                                            ["--strategy", "hpp", *norep, *prof], norep, first, every, limit, target, to)
        prof_args = ["--profile", os.path.join(hpp_dir, "profile.json")]
        log("  hpp+FT")
        out["runs"]["hpp_ft"] = asteroid_until(b, cluster, model, os.path.join(d, "hpp_ft"),
                                               ["--plan", os.path.join(hpp_dir, "plan.json"), *prof_args], [], first,
                                               every, limit, target, to)
        dd = os.path.join(d, "dp")
        if b.plan(hpp_dir, "dp", dd, model):
            log("  dp")
            out["runs"]["dp"] = asteroid_until(b, cluster, model, dd, ["--plan", os.path.join(dd, "plan-in.json"),
                                                                       *prof_args, *norep], norep, first, every, limit,
                                               target, to)
        sd = os.path.join(d, "single")
        if b.single_plan(hpp_dir, sd, model):
            log("  single")
            out["runs"]["single"] = asteroid_until(b, cluster, model, sd, ["--plan", os.path.join(sd, "plan-in.json"),
                                                                           *prof_args, *norep], norep, first, every,
                                                   limit, target, to)
        log("  DDP")
        res = b.ddp(cluster, model, os.path.join(d, "ddp"), limit, to, test_samples=10000,
                    extra=["--eval-every", str(every), "--eval-from", str(first), "--target-acc", str(target)])
        out["runs"]["ddp"] = {"rounds": res.get("reached_round") or res.get("rounds"),
                              "reached": bool(res.get("reached_round")), "train_s": res.get("time_to_target_s"),
                              "wall_s": res.get("wall_s"), "setup_s": res.get("setup_s"),
                              "test_accuracy": res.get("final_accuracy"), "samples_per_s": res.get("samples_per_s"),
                              "load_before": res.get("load_before"), "error": res.get("error"),
                              "evals": res.get("evals")}
    finally:
        cluster.down()
    return out


# --------------------------------------------------------------------------- planner, recovery, machine


def planner_bench(b, repeats, work):
    exe = os.path.join(os.path.dirname(b.asteroid), "bench_planner")
    if not os.path.exists(exe):
        return {"error": f"{exe} not built (cmake --build BUILD --target bench_planner)"}
    logp = os.path.join(work, "bench_planner.log")
    rc, secs = run([exe, str(repeats)], logp, 1800)
    with open(logp) as f:
        text = f.read().split("\n", 1)[1]
    return {"rc": rc, "seconds": secs, "repeats": repeats, "markdown": text}


def recovery_results():
    """The fault-tolerance benchmark's output (scripts/bench_recovery.sh writes
    bench/results/recovery-<date>/recovery.{json,md}; also any JSON under
    bench/recovery*), the newest run only."""
    found = []
    runs = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "recovery-*", "recovery.json")))
    paths = runs[-1:] + sorted(p for p in glob.glob(os.path.join(ROOT, "bench", "recovery*", "**", "*.json"),
                                                    recursive=True))
    for path in paths:
        try:
            with open(path) as f:
                item = {"path": os.path.relpath(path, ROOT), "data": json.load(f)}
        except (OSError, ValueError):
            continue
        md = os.path.join(os.path.dirname(path), "recovery.md")
        if os.path.exists(md):
            with open(md) as f:
                item["markdown"] = f.read()
        found.append(item)
    return found


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return ""
    return {"nproc": os.cpu_count(), "lscpu": sh("lscpu | head -15"), "kernel": platform.release(),
            "os": sh(". /etc/os-release && echo $PRETTY_NAME"), "memory": sh("free -g | head -2"),
            "torch": sh(f"{PYTHON} -c 'import torch; print(torch.__version__)'"),
            "git": sh(f"git -C {ROOT} rev-parse --short HEAD"), "hostname": platform.node(),
            "git_dirty": sh(f"git -C {ROOT} status --porcelain --untracked-files=no").splitlines()}


# --------------------------------------------------------------------------- main


def wait_for_low_load(threshold, max_wait):
    if threshold <= 0:
        return loadavg()
    t0 = time.time()
    while time.time() - t0 < max_wait:
        l1 = loadavg()
        if l1 is not None and l1 < threshold:
            return l1
        log(f"load average {l1:.2f} >= {threshold}: waiting (up to {max_wait - (time.time() - t0):.0f} s more)")
        time.sleep(30)
    return loadavg()


def find_asteroid():
    for cand in (os.environ.get("ASTEROID_BIN"), os.path.join(ROOT, "build-bench", "bin", "asteroid"),
                 os.path.join(ROOT, "build", "bin", "asteroid")):
        if cand and os.path.exists(cand):
            return cand
    return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="env C and D at 100 Mbit/s and C at 1000, fmnist-cnn and fmnist-resnet")
    mode.add_argument("--full", action="store_true", help="envs A-D at 100 and 1000 Mbit/s, every model, and time to "
                      "accuracy")
    mode.add_argument("--tta-only", action="store_true", help="only the time-to-accuracy runs")
    mode.add_argument("--report", metavar="DIR", help="rebuild report.md and the plots of DIR/results.json")
    p.add_argument("--envs", default="", help="comma-separated, e.g. C,D")
    p.add_argument("--bandwidths", default="", help="comma-separated Mbit/s, e.g. 100,1000")
    p.add_argument("--models", default="", help="comma-separated zoo models")
    p.add_argument("--strategies", default=",".join(STRATEGIES + ["alone"]),
                   help="subset of hpp,dp,pp,single,hpp_ft,ddp,alone (hpp always runs: it profiles)")
    p.add_argument("--rounds", type=int, default=0, help="rounds per run (0: per model, see MODELS)")
    p.add_argument("--warmup", type=int, default=None, help="rounds left out of the median (default per model)")
    p.add_argument("--tta", action="store_true", help="also time to accuracy (on with --full)")
    p.add_argument("--tta-target", type=float, default=0.85)
    p.add_argument("--tta-env", default="C")
    p.add_argument("--tta-bandwidth", type=int, default=100)
    p.add_argument("--planner-repeats", type=int, default=0, help="bench_planner repeats (0: 1 quick, 3 full; -1: skip)")
    p.add_argument("--asteroid", default=find_asteroid(), help="the asteroid binary (default build-bench/bin, then build/bin)")
    p.add_argument("--out", default="", help="results directory (default bench/results/<stamp>-<mode>)")
    p.add_argument("--work", default="", help="run folders (default runs/bench/<stamp>)")
    p.add_argument("--heartbeat-deadline", type=int, default=700,
                   help="ms of heartbeat silence before a device counts as lost (asteroid's default; heartbeats "
                        "travel as datagrams beside the bulk data, docs/runtime.md)")
    p.add_argument("--wait-load", type=float, default=0.0, help="wait until the 1-minute load is below this first")
    p.add_argument("--wait-max", type=float, default=900)
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.report:
        import report
        report.write_report(a.report)
        return 0
    if not a.asteroid or not os.path.exists(a.asteroid):
        print("no asteroid binary: build it (scripts/bench.sh does) or pass --asteroid", file=sys.stderr)
        return 2
    a.asteroid = os.path.abspath(a.asteroid)
    quick = not a.full and not a.tta_only
    a.quick = quick
    mode = "full" if a.full else ("tta" if a.tta_only else "quick")
    envs = a.envs.split(",") if a.envs else (ALL_ENVS if a.full else ["C", "D"])
    bws = [int(x) for x in a.bandwidths.split(",")] if a.bandwidths else (ALL_BANDWIDTHS if a.full else [100])
    pairs = [(env, bw) for bw in bws for env in envs]
    if quick and not a.envs and not a.bandwidths:
        pairs.append(("C", 1000))  # the default job's setting, where hpp uses groups
    models = a.models.split(",") if a.models else (list(MODELS) if a.full else ["fmnist-cnn", "fmnist-resnet"])
    for m in models:
        if m not in MODELS:
            print(f"unknown model {m}; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2
    strategies = set(a.strategies.split(",")) | {"hpp"}
    stamp = time.strftime("%Y%m%d-%H%M")
    out = os.path.abspath(a.out or os.path.join(ROOT, "bench", "results", f"{stamp}-{mode}"))
    work = os.path.abspath(a.work or os.path.join(ROOT, "runs", "bench", stamp))
    os.makedirs(out, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    b = Bench(a)
    load0 = wait_for_low_load(a.wait_load, a.wait_max)
    results = {"format": "asteroid-bench/1", "mode": mode, "started": datetime.datetime.now().astimezone().isoformat(
        timespec="seconds"), "machine": machine(), "load_at_start": load0, "work_dir": work, "configs": [],
        "settings": {"envs": envs, "bandwidths": bws, "pairs": pairs, "models": models, "strategies": sorted(strategies),
                     "models_table": {m: MODELS[m] for m in models}}}
    t_start = time.time()

    def save():
        results["elapsed_s"] = time.time() - t_start
        tmp = os.path.join(out, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1, default=str)
        os.replace(tmp, os.path.join(out, "results.json"))

    log(f"results -> {out}; run folders -> {work}; load {load0}")
    if not a.tta_only:
        for env, bw in pairs:
            cluster = Cluster(a.asteroid, env, bw, os.path.join(work, "clusters", f"{env}-{bw}"))
            try:
                log(f"cluster up: env {env} at {bw} Mbit/s")
                cluster.up()
            except RuntimeError as e:
                log(str(e))
                results["configs"].append({"env": env, "bandwidth": bw, "error": str(e)})
                save()
                continue
            try:
                for model in models:
                    cfg = b.run_model(cluster, model, work, strategies)
                    results["configs"].append(cfg)
                    save()
                    t = cfg.get("throughput", {})
                    log("  samples/s: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if v) +
                        (f"; eta {cfg['eta']:.2f}" if cfg.get("eta") else ""))
            finally:
                cluster.down()
        reps = a.planner_repeats or (1 if quick else 3)
        if reps > 0:
            log(f"planner benchmark (bench_planner {reps})")
            results["planner"] = planner_bench(b, reps, work)
        results["recovery"] = recovery_results()
        save()
    if a.full or a.tta or a.tta_only:
        results["tta"] = time_to_accuracy(b, work, a.tta_env, a.tta_bandwidth, target=a.tta_target)
        if a.tta_only:
            results["recovery"] = recovery_results()
        save()
    results["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    results["load_at_end"] = loadavg()
    save()
    import report
    report.write_report(out)
    log(f"done in {(time.time() - t_start) / 60:.1f} min: {out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
