#!/usr/bin/python3
"""Plots of an `asteroid train` run folder (docs/default-job.md).

    /usr/bin/python3 scripts/plot_run.py RUN_DIR [--rounds N]

Reads RUN_DIR/metrics.jsonl, summary.json and trace.json and writes
  loss.png        the loss of every committed round (and a moving average),
  throughput.png  samples/s of every round (moving average), with the
                  planner's prediction and the best single device,
  timeline.png    N rounds (default 3) of the pipeline near the end of the run:
                  one row per device, forward / backward / all-reduce /
                  optimizer step / sends as boxes.
Failures and re-plans from metrics.jsonl are marked on the first two.

Needs matplotlib (Debian: python3-matplotlib; run with /usr/bin/python3).
Exits non-zero with a message when something is missing.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path):
    rounds, events = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            j = json.loads(line)
            if "round" in j and "loss" in j:
                rounds.append(j)
            elif "event" in j:
                # Place an event after the rounds committed before it.
                events.append((len(rounds), j))
    return rounds, events


def moving_average(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def mark_events(ax, rounds, events):
    seen = set()
    for index, e in events:
        kind = e.get("event", "")
        colors = {"failure": "tab:red", "replan": "tab:orange", "rejoin": "tab:green", "adapt": "tab:purple"}
        if kind not in colors:
            continue
        x = rounds[min(index, len(rounds) - 1)]["round"] if rounds else 0
        color = colors[kind]
        ax.axvline(x, color=color, linestyle=":", linewidth=1, label=None if kind in seen else kind)
        seen.add(kind)


def title_of(summary):
    parts = [summary.get("strategy", "?"), summary.get("model", "?")]
    if summary.get("env"):
        parts.append("env " + summary["env"])
    return ", ".join(parts)


def plot_loss(run, rounds, events, summary):
    xs = [r["round"] for r in rounds]
    losses = [r["loss"] for r in rounds]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="loss per round")
    ax.plot(xs, moving_average(losses, 20), color="tab:blue", linewidth=1.8, label="moving average (20)")
    mark_events(ax, rounds, events)
    ax.set_xlabel("round")
    ax.set_ylabel("training loss")
    acc = summary.get("test_accuracy")
    ax.set_title("Loss: " + title_of(summary) + ("" if acc is None else ", test accuracy %.2f %%" % (100 * acc)))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(run, "loss.png"), dpi=110)
    plt.close(fig)


def plot_throughput(run, rounds, events, summary):
    xs = [r["round"] for r in rounds]
    rates = [r["samples"] * 1000.0 / r["ms"] if r.get("ms", 0) > 0 else 0 for r in rounds]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, rates, color="tab:green", alpha=0.3, linewidth=0.8, label="per round")
    ax.plot(xs, moving_average(rates, 20), color="tab:green", linewidth=1.8, label="moving average (20)")
    if summary.get("samples_per_s"):
        ax.axhline(summary["samples_per_s"], color="tab:green", linestyle="--", linewidth=1,
                   label="measured over the run: %.0f" % summary["samples_per_s"])
    if summary.get("predicted_samples_per_s"):
        ax.axhline(summary["predicted_samples_per_s"], color="black", linestyle="--", linewidth=1,
                   label="planner's prediction: %.0f" % summary["predicted_samples_per_s"])
    if summary.get("best_single_samples_per_s"):
        ax.axhline(summary["best_single_samples_per_s"], color="tab:gray", linestyle="-.", linewidth=1,
                   label="best single device (%s, profile): %.0f"
                   % (summary.get("best_single_device", "?"), summary["best_single_samples_per_s"]))
    if summary.get("best_single_measured_samples_per_s"):
        ax.axhline(summary["best_single_measured_samples_per_s"], color="tab:red", linestyle=":", linewidth=1.4,
                   label="best single device (%s, measured on the cluster): %.0f, speedup %.2fx"
                   % (summary.get("best_single_device", "?"), summary["best_single_measured_samples_per_s"],
                      summary.get("speedup_measured", 0)))
    mark_events(ax, rounds, events)
    ax.set_xlabel("round")
    ax.set_ylabel("samples/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput: " + title_of(summary))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(run, "throughput.png"), dpi=110)
    plt.close(fig)


COLORS = {
    "forward": "tab:blue",
    "backward": "tab:orange",
    "all_reduce": "tab:green",
    "optimizer_step": "tab:purple",
    "send": "tab:gray",
}


def plot_timeline(run, summary, how_many):
    path = os.path.join(run, "trace.json")
    with open(path) as f:
        trace = json.load(f)
    events = trace.get("traceEvents", [])
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M"}
    boxes = [e for e in events if e.get("ph") == "X" and e.get("cat") in COLORS]
    rounds = sorted({e["args"]["round"] for e in boxes})
    if not rounds:
        raise SystemExit("trace.json has no forward/backward events")
    # A few whole rounds near the end (not the very last: it may be cut short).
    end = len(rounds) - 1 if len(rounds) > how_many else len(rounds)
    chosen = set(rounds[max(0, end - how_many):end])
    boxes = [e for e in boxes if e["args"]["round"] in chosen]
    t0 = min(e["ts"] for e in boxes)
    rows = sorted({(e["pid"], e["tid"]) for e in boxes}, key=lambda r: (r[1], r[0]))  # by stage, member
    row_of = {key: i for i, key in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.55 * len(rows)))
    for e in boxes:
        y = row_of[(e["pid"], e["tid"])]
        start = (e["ts"] - t0) / 1000.0
        width = max(e["dur"] / 1000.0, 0.02)
        small = e["cat"] == "send"
        ax.broken_barh([(start, width)], (y - (0.12 if small else 0.38), 0.24 if small else 0.76),
                       facecolors=COLORS[e["cat"]], edgecolor="white", linewidth=0.3)
    for r in sorted(chosen):  # where each round's first op starts
        start = (min(e["ts"] for e in boxes if e["args"]["round"] == r) - t0) / 1000.0
        ax.axvline(start, color="black", linewidth=0.6, alpha=0.5)
        ax.text(start, -0.55, " round %d" % r, fontsize=7, va="bottom")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(["%s (stage %d)" % (names.get(pid, str(pid)), tid // 100) for pid, tid in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    ax.set_title("Pipeline timeline, rounds %s: %s" % (", ".join(str(r) for r in sorted(chosen)), title_of(summary)))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    ax.legend(handles, list(COLORS.keys()), loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.1 / max(1, len(rows))),
              ncol=len(COLORS), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(run, "timeline.png"), dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in the timeline")
    args = parser.parse_args()
    summary = {}
    if os.path.exists(os.path.join(args.run, "summary.json")):
        with open(os.path.join(args.run, "summary.json")) as f:
            summary = json.load(f)
    rounds, events = read_metrics(os.path.join(args.run, "metrics.jsonl"))
    if not rounds:
        raise SystemExit("metrics.jsonl has no rounds")
    failed = []
    for name, fn in (("loss", lambda: plot_loss(args.run, rounds, events, summary)),
                     ("throughput", lambda: plot_throughput(args.run, rounds, events, summary)),
                     ("timeline", lambda: plot_timeline(args.run, summary, args.rounds))):
        try:
            fn()
        except (OSError, ValueError, KeyError, SystemExit) as e:
            failed.append("%s: %s" % (name, e))
    if failed:
        print("plot_run.py: " + "; ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
