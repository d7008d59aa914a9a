#!/usr/bin/env python3
"""Service soak (docs/service.md, "Memory over many jobs").

Starts NODES `asteroid node` processes and one `asteroid serve` on
127.0.0.1 (ports the processes pick, read back), submits JOBS small jobs
one after another over the HTTP API, and after each records the service's
and the nodes' resident memory (VmRSS). Prints a table every EVERY jobs and
writes soak.json + soak.md into --out. Every process it starts is stopped by
pid at the end, also on failure; every wait has a deadline.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def call(url, method="GET", body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--asteroid", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="asteroid-soak-")
    procs = []
    try:
        devices = []
        for i in range(args.nodes):
            log = open(os.path.join(work, f"node{i}.log"), "w")
            p = subprocess.Popen([args.asteroid, "node", "--host", "127.0.0.1", "--port", "0", "--id", f"d{i}"],
                                 stdout=subprocess.PIPE, stderr=log, text=True)
            procs.append(p)
            first = p.stdout.readline()  # the node prints its port first
            port = int(first.strip().rsplit(":", 1)[-1].split()[0])
            devices.append({"id": f"d{i}", "host": "127.0.0.1", "port": port, "memory_mb": 4096})
        cluster = os.path.join(work, "cluster.json")
        with open(cluster, "w") as f:
            json.dump({"devices": devices, "default_bandwidth_mbps": 1000}, f)
        ready = os.path.join(work, "url")
        serve = subprocess.Popen([args.asteroid, "serve", "--state-dir", os.path.join(work, "state"), "--cluster",
                                  cluster, "--listen", "127.0.0.1:0", "--ready-file", ready],
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.log"), "w"))
        procs.append(serve)
        wait_for("the service", lambda: os.path.exists(ready), 60)
        url = open(ready).read().strip()
        spec = {"model": "fmnist-cnn", "rounds": args.rounds, "probe_rounds": 0, "profile_batches": "8,32",
                "profile_repeats": 1, "no_plots": True, "test_samples": 500}
        rows = []
        t0 = time.time()
        for n in range(1, args.jobs + 1):
            job = call(url + "/jobs", "POST", spec)["id"]
            state = wait_for(job, lambda: call(f"{url}/jobs/{job}")["state"] in ("finished", "failed", "cancelled")
                             and call(f"{url}/jobs/{job}")["state"], 600)
            if state != "finished":
                raise RuntimeError(f"{job} ended {state}: {call(f'{url}/jobs/{job}').get('error')}")
            rows.append({"jobs": n, "t_s": round(time.time() - t0, 1), "service_rss_mib": round(rss_mib(serve.pid), 1),
                         "nodes_rss_mib": [round(rss_mib(p.pid), 1) for p in procs[:-1]]})
            if n % args.every == 0 or n == 1:
                r = rows[-1]
                print(f"{n:4d} jobs  {r['t_s']:7.1f} s  service {r['service_rss_mib']:6.1f} MiB  nodes "
                      + " ".join(f"{m:6.1f}" for m in r["nodes_rss_mib"]), flush=True)
        with open(os.path.join(args.out, "soak.json"), "w") as f:
            json.dump({"spec": spec, "rows": rows}, f, indent=1)
        first, last = rows[0], rows[-1]
        with open(os.path.join(args.out, "soak.md"), "w") as f:
            f.write("| jobs done | service RSS MiB | nodes RSS MiB |\n|---|---|---|\n")
            for r in rows:
                if r["jobs"] == 1 or r["jobs"] % args.every == 0:
                    f.write(f"| {r['jobs']} | {r['service_rss_mib']} | {', '.join(map(str, r['nodes_rss_mib']))} |\n")
        print(f"service RSS after job 1: {first['service_rss_mib']} MiB, after job {last['jobs']}: "
              f"{last['service_rss_mib']} MiB; written to {args.out}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
