"""Pure functions over a run folder's files: throughput from metrics.jsonl, the
time breakdown and bubble fraction from trace.json, η and predictions from
profile.json / plan.json, and the markdown table. No I/O beyond reading the
files named; tested by bench/report/test_analyze.py.
"""
import json
import math
import statistics
from collections import defaultdict

# --------------------------------------------------------------------------- metrics


def read_metrics(path):
    """Committed rounds of a metrics.jsonl (lines with "ms"), in order."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            obj = json.loads(line)
            if "ms" in obj and "round" in obj:
                rows.append(obj)
    return rows


def steady(rows, warmup):
    """The rounds after the warm-up (all of them when there are too few)."""
    return rows[warmup:] if len(rows) > warmup else rows


def median_throughput(round_ms, batch, warmup):
    """batch / median round time after the warm-up, samples/s."""
    ms = steady(list(round_ms), warmup)
    if not ms:
        return None
    return batch * 1000.0 / statistics.median(ms)


# --------------------------------------------------------------------------- trace


def load_trace(path):
    with open(path) as f:
        t = json.load(f)
    return t["traceEvents"] if isinstance(t, dict) else t


def _interval_len(a, b):
    return max(0.0, b - a)


def trace_breakdown(events, rounds=None):
    """Per device: where its time went in the given rounds (all when None).

    Every round's window is the span of its events over all devices (first
    start to last end). Within it, per device (trace pid, named by its
    process_name):

    - compute: forward + backward + optimizer step;
    - send: encoding and handing messages to the network (activations,
      gradients, all-reduce chunks and replicas);
    - all_reduce: from the device's last backward to its optimizer step
      (the ring, including waiting for the slower members of its group);
    - transfer_wait: the device waits for an input (activation or gradient)
      that its producer has already computed: from the producer's op end to
      the arrival (the receive event), clipped to the gap before the op;
    - bubble: the device waits for an input whose producer has not finished
      computing it (pipeline fill and drain);
    - idle: the rest of the window (start/commit messages, scheduling,
      decoding, waiting for the round to end).

    Times in ms, summed over the rounds. Returns (per_device, summary) where
    summary has the window sum, the bubble fraction (1 - compute /
    (devices x window), as the planner's simulator defines it) and the
    averages over devices.
    """
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            names[e["pid"]] = e["args"]["name"]
    by_round = defaultdict(list)
    for e in events:
        if e.get("ph") != "X":
            continue
        r = e.get("args", {}).get("round")
        if r is None or (rounds is not None and r not in rounds):
            continue
        by_round[r].append(e)

    cats = ("compute", "send", "all_reduce", "transfer_wait", "bubble", "idle")
    per = defaultdict(lambda: {c: 0.0 for c in cats})
    window_sum = 0.0
    devices_seen = set()
    for r, evs in sorted(by_round.items()):
        start = min(e["ts"] for e in evs)
        end = max(e["ts"] + e["dur"] for e in evs)
        window = (end - start) / 1e3
        window_sum += window
        # Ops by (stage, microbatch, kind): end times per member (for producers).
        op_end = defaultdict(list)
        for e in evs:
            if e["cat"] in ("forward", "backward"):
                op_end[(e["tid"] // 100, e["args"]["microbatch"], e["cat"])].append(e["ts"] + e["dur"])
        stages = {e["tid"] // 100 for e in evs}
        last_stage = max(stages)
        by_dev = defaultdict(list)
        for e in evs:
            by_dev[e["pid"]].append(e)
        for pid, dev_events in by_dev.items():
            name = names.get(pid, str(pid))
            devices_seen.add(name)
            acc = per[name]
            busy = 0.0
            for e in dev_events:
                d = e["dur"] / 1e3
                if e["cat"] in ("forward", "backward", "optimizer-step"):
                    acc["compute"] += d
                    busy += d
                elif e["cat"] == "send":
                    acc["send"] += d
                    busy += d
                elif e["cat"] == "all-reduce":
                    acc["all_reduce"] += d
                    busy += d
            # Gaps before ops that wait for an input.
            timeline = sorted((e for e in dev_events if e["cat"] != "receive"), key=lambda e: e["ts"])
            receives = sorted((e for e in dev_events if e["cat"] == "receive"), key=lambda e: e["ts"])
            fwd_end = {}
            for e in timeline:
                if e["cat"] == "forward":
                    fwd_end[e["args"]["microbatch"]] = e["ts"] + e["dur"]
            prev_end = start
            waited = 0.0
            for e in timeline:
                gap0, gap1 = prev_end, e["ts"]
                prev_end = max(prev_end, e["ts"] + e["dur"])
                if gap1 <= gap0 or e["cat"] not in ("forward", "backward"):
                    continue
                stage, mb = e["tid"] // 100, e["args"]["microbatch"]
                if e["cat"] == "forward":
                    if stage == 0:
                        continue  # its input is local data
                    producer = op_end.get((stage - 1, mb, "forward"))
                    rec = [x["ts"] for x in receives if x["args"]["microbatch"] == mb and x["ts"] <= e["ts"]]
                else:
                    if stage == last_stage:
                        continue  # the loss is local
                    producer = op_end.get((stage + 1, mb, "backward"))
                    f_end = fwd_end.get(mb, start)
                    rec = [x["ts"] for x in receives
                           if x["args"]["microbatch"] == mb and f_end <= x["ts"] <= e["ts"]]
                if not producer:
                    continue
                ready = max(producer)
                arrived = max(rec) if rec else e["ts"]
                bubble = _interval_len(gap0, min(ready, gap1))
                transfer = _interval_len(max(gap0, ready), min(arrived, gap1))
                acc["bubble"] += bubble / 1e3
                acc["transfer_wait"] += transfer / 1e3
                waited += (bubble + transfer) / 1e3
            acc["idle"] += max(0.0, window - busy - waited)
    n = len(devices_seen)
    compute_total = sum(v["compute"] for v in per.values())
    summary = {
        "rounds": len(by_round),
        "window_ms": window_sum,
        "devices": n,
        "bubble_fraction": (1 - compute_total / (n * window_sum)) if n and window_sum > 0 else None,
        "mean_fraction": {c: (sum(v[c] for v in per.values()) / (n * window_sum)) if n and window_sum > 0 else None
                          for c in cats},
    }
    return {k: dict(v) for k, v in per.items()}, summary


# --------------------------------------------------------------------------- profile / plan


def interp(batches, times, b):
    """COST_MODEL.md's rule: linear between profiled sizes, through (0, 0) below
    the first, proportional above the last."""
    if b <= 0:
        return 0.0
    if b <= batches[0]:
        return times[0] * b / batches[0]
    for i in range(1, len(batches)):
        if b <= batches[i]:
            b0, b1 = batches[i - 1], batches[i]
            return times[i - 1] + (times[i] - times[i - 1]) * (b - b0) / (b1 - b0)
    return times[-1] * b / batches[-1]


def device_round_ms(profile, device, batch):
    """Modelled one-stage round of the whole model on `device` with the whole
    mini-batch as one micro-batch (fwd + bwd summed over the layers),
    profile.json as FORMATS.md defines it."""
    d = profile["devices"][device]
    total = 0.0
    for f, b in zip(d["fwd_ms"], d["bwd_ms"]):
        total += interp(d["batch"], f, batch) + interp(d["batch"], b, batch)
    return total


def per_device_throughput(profile, batch):
    return {dev: batch * 1000.0 / device_round_ms(profile, dev, batch) for dev in profile["devices"]}


def eta(hpp_samples_per_s, device_throughputs):
    s = sum(device_throughputs.values())
    return hpp_samples_per_s / s if s > 0 else None


def prediction_error(measured, predicted):
    """(measured - predicted) / predicted: negative when the runtime is slower."""
    if not measured or not predicted:
        return None
    return (measured - predicted) / predicted


def ratio(a, b):
    return a / b if a and b else None


# --------------------------------------------------------------------------- table


def fmt(x, digits=1, pct=False, suffix=""):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if pct:
        return f"{100 * x:+.0f} %"
    return f"{x:.{digits}f}{suffix}"


TABLE_HEADER = ("| env | Mbit/s | model | batch | hpp | dp | pp | single | DDP | predicted hpp | "
                "hpp/dp | hpp/pp | hpp/DDP | hpp/single | η | pred. error | bubble | hpp plan |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def table_row(c):
    """One configuration (a dict from results.json) as a markdown row; samples/s."""
    t = c.get("throughput", {})
    hpp = t.get("hpp")

    def cell(s):
        v = t.get(s)
        if v is None:
            err = c.get("errors", {}).get(s)
            return "failed" if err else "–"
        return fmt(v, 1 if v < 100 else 0)

    return (f"| {c['env']} | {c['bandwidth']} | {c['model']} | {c['batch']} | {cell('hpp')} | {cell('dp')} | "
            f"{cell('pp')} | {cell('single')} | {cell('ddp')} | {fmt(c.get('predicted_hpp'), 0)} | "
            f"{fmt(ratio(hpp, t.get('dp')), 2, suffix='x')} | {fmt(ratio(hpp, t.get('pp')), 2, suffix='x')} | "
            f"{fmt(ratio(hpp, t.get('ddp')), 2, suffix='x')} | {fmt(ratio(hpp, t.get('single')), 2, suffix='x')} | "
            f"{fmt(c.get('eta'), 2)} | {fmt(c.get('prediction_error'), pct=True)} | "
            f"{fmt(c.get('bubble_fraction', {}).get('hpp'), 2)} | {c.get('plan_text', {}).get('hpp', '–')} |\n")


def markdown_table(configs):
    return TABLE_HEADER + "".join(table_row(c) for c in configs)


def plan_text(plan):
    """'2 stages: [nx-0,tx2-0] L0-3 | [tx2-1] L4-5, M=4' from a plan.json."""
    if not plan:
        return "–"
    parts = []
    for s in plan.get("stages", []):
        devs = ",".join(d["id"] for d in s.get("devices", []))
        layers = s.get("layers", [s.get("begin"), s.get("end")])
        if isinstance(layers, dict):
            layers = [layers.get("begin"), layers.get("end")]
        parts.append(f"{devs} L{layers[0]}-{layers[1] - 1}" if None not in layers[:2] else devs)
    return f"{' / '.join(parts)}, M={plan.get('microbatches', '?')}"
