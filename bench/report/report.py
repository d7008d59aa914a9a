"""report.md and PNG plots from a results.json written by bench.py.

    /usr/bin/python3 bench/report/bench.py --report bench/results/<dir>
"""
import json
import os

import analyze

LABELS = {"hpp": "hpp", "hpp_ft": "hpp+FT", "dp": "dp", "pp": "pp", "single": "single", "ddp": "DDP"}
ORDER = ["hpp", "hpp_ft", "dp", "pp", "single", "ddp"]
CATS = [("compute", "compute", "#4c72b0"), ("send", "send", "#8172b2"), ("transfer_wait", "transfer wait", "#dd8452"),
        ("all_reduce", "all-reduce", "#c44e52"), ("bubble", "bubble", "#bbbbbb"), ("idle", "idle/overhead", "#eeeeee")]


def mb(x):
    return "–" if x is None else f"{x / 1048576:.0f}"


def gb(x):
    return "–" if x is None else f"{x / 1073741824:.1f}"


def config_name(c):
    return f"{c['env']}@{c['bandwidth']} {c['model']}"


def targets(configs):
    """The issue's targets on the heterogeneous envs (B, C, D) at 100 Mbit/s."""
    rows = []
    for c in configs:
        if c.get("bandwidth") != 100 or c.get("env") not in ("B", "C", "D") or "throughput" not in c:
            continue
        r = c["ratios"]
        checks = [("hpp/dp >= 2", r.get("dp"), 2.0), ("hpp/pp >= 2", r.get("pp"), 2.0),
                  ("hpp/DDP >= 1.5", r.get("ddp"), 1.5), ("η >= 0.8", c.get("eta"), 0.8)]
        pe = c.get("prediction_error")
        out = []
        for name, v, bar in checks:
            out.append((name, v, None if v is None else v >= bar))
        out.append(("pred. error within 15 %", pe, None if pe is None else abs(pe) <= 0.15))
        rows.append((c, out))
    return rows


def breakdown_table(configs):
    lines = ["| config | strategy | device | compute | send | transfer wait | all-reduce | bubble | idle | "
             "round (trace) | runtime overhead |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in configs:
        for s in ("hpp", "hpp_ft", "dp", "pp", "single"):
            r = c.get("runs", {}).get(s) or {}
            per = r.get("breakdown_ms")
            if not per:
                continue
            n = max(1, r["breakdown"]["rounds"])
            first = True
            for dev, v in per.items():
                lines.append(
                    f"| {config_name(c) if first else ''} | {LABELS[s] if first else ''} | {dev} | "
                    + " | ".join(f"{v[k] / n:.1f}" for k in ("compute", "send", "transfer_wait", "all_reduce",
                                                               "bubble", "idle"))
                    + (f" | {r.get('trace_round_ms', 0):.1f} | {r.get('runtime_overhead_ms', 0):.1f} |" if first
                       else " | | |"))
                first = False
        d = c.get("runs", {}).get("ddp") or {}
        for rk in d.get("ranks", []) or []:
            mm = rk["median_ms"]
            cal = rk.get("calibration_ms") or {}
            bwd = cal.get("backward_ms")
            compute = mm["forward_ms"] + mm["step_ms"] + mm["data_ms"] + (bwd or 0)
            ar = mm["backward_allreduce_ms"] - (bwd or 0)
            lines.append(f"| {config_name(c) if rk['rank'] == 0 else ''} | {'DDP' if rk['rank'] == 0 else ''} | "
                         f"{rk['device']} | {compute:.1f} | | | {ar:.1f}{'' if bwd is not None else ' (incl. bwd)'}"
                         f" | | {max(0.0, mm['ms'] - compute - ar):.1f} | {mm['ms']:.1f} | |")
    return "\n".join(lines) + "\n"


def memory_table(configs):
    lines = ["| config | device | budget GiB | hpp planned MiB | hpp node peak RSS MiB | hpp cgroup peak MiB | "
             "DDP rank peak RSS MiB | DDP cgroup peak MiB |", "|---|---|---|---|---|---|---|---|"]
    for c in configs:
        runs = c.get("runs", {})
        hm = (runs.get("hpp") or {}).get("memory") or {}
        dm = (runs.get("ddp") or {}).get("memory") or {}
        planned = (runs.get("hpp") or {}).get("planned_memory") or {}
        first = True
        for dev in c.get("devices", []):
            h, d = hm.get(dev, {}), dm.get(dev, {})
            lines.append(f"| {config_name(c) if first else ''} | {dev} | {gb(h.get('budget_bytes'))} | "
                         f"{mb(planned.get(dev))} | {mb(h.get('node_peak_rss_bytes'))} | "
                         f"{mb(h.get('cgroup_peak_bytes'))} | {mb(d.get('process_peak_rss_bytes'))} | "
                         f"{mb(d.get('cgroup_peak_bytes'))} |")
            first = False
    return "\n".join(lines) + "\n"


def write_report(directory):
    with open(os.path.join(directory, "results.json")) as f:
        res = json.load(f)
    configs = [c for c in res.get("configs", []) if "runs" in c]
    pngs = plots(res, configs, directory)
    m = res.get("machine", {})
    lines = [f"# Asteroid benchmark: {res.get('mode')} run of {res.get('started')}", "",
             f"Machine: {m.get('hostname')}, `nproc` = {m.get('nproc')}, kernel {m.get('kernel')}, {m.get('os')}, "
             f"torch {m.get('torch')}, commit {m.get('git')}"
             f"{' (working tree with uncommitted changes to ' + str(len(m['git_dirty'])) + ' files)' if m.get('git_dirty') else ''}. Load average (1 min) at the start "
             f"{res.get('load_at_start')}, at the end {res.get('load_at_end')}; elapsed "
             f"{(res.get('elapsed_s') or 0) / 60:.1f} min.", "", "```", m.get("lscpu", ""), "```", "",
             "## Throughput (samples/s, median round after warm-up)", "",
             "hpp, dp, pp, single: `--replicate-every 0` (no state replication, as DDP); hpp+FT: the runtime's "
             "default (every single-device stage replicates its state every round). η = hpp / sum of every "
             "device's own single-device throughput (measured alone, in-process, as that device); prediction error = "
             "(measured − predicted) / predicted for hpp; bubble = 1 − compute / (devices × round) of the hpp run.",
             "", analyze.TABLE_HEADER.replace("| hpp plan |", "| hpp+FT | hpp plan |").replace(
                 "|---|\n", "|---|---|\n", 1)]
    # the table with an hpp+FT column before the plan
    body = []
    for c in configs:
        row = analyze.table_row(c)
        ft = c.get("throughput", {}).get("hpp_ft")
        cells = [x.strip() for x in row.rstrip("\n").rstrip("|").split(" | ")]
        cells.insert(len(cells) - 1, analyze.fmt(ft, 1 if ft and ft < 100 else 0))
        body.append(" | ".join(cells) + " |")
    lines[-1] = lines[-1].rstrip("\n")
    lines += body
    lines += ["", "η from the profile instead (batch / modelled one-stage round of each device): " + ", ".join(
        f"{config_name(c)} {analyze.fmt(c.get('eta_profile'), 2)}" for c in configs), ""]
    for p in pngs:
        lines.append(f"![{p}]({p})")
    lines.append("")
    tg = targets(configs)
    if tg:
        lines += ["## Targets (heterogeneous envs at 100 Mbit/s)", "", "| config | " + " | ".join(
            n for n, _, _ in tg[0][1]) + " |", "|---|" + "---|" * len(tg[0][1])]
        for c, checks in tg:
            cells = []
            for name, v, ok in checks:
                val = analyze.fmt(v, pct=True) if "error" in name else analyze.fmt(v, 2)
                cells.append("–" if ok is None else f"{val} {'met' if ok else 'MISSED'}")
            lines.append(f"| {config_name(c)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Plans and predictions", "", "| config | strategy | plan | measured | predicted | error | load |",
              "|---|---|---|---|---|---|---|"]
    for c in configs:
        for s in ORDER:
            r = c.get("runs", {}).get(s)
            if not r or s == "ddp":
                continue
            lines.append(f"| {config_name(c)} | {LABELS[s]} | {r.get('plan', '–')} | "
                         f"{analyze.fmt(r.get('samples_per_s'))} | {analyze.fmt(r.get('predicted_samples_per_s'))} | "
                         f"{analyze.fmt(analyze.prediction_error(r.get('samples_per_s'), r.get('predicted_samples_per_s')), pct=True)} | "
                         f"{analyze.fmt(r.get('load_before'), 2)} |")
    lines += ["", "## Where each device's time goes (ms per round, steady rounds, from trace.json)", "",
              "Asteroid runs from trace.json (bench/report/analyze.py `trace_breakdown`); DDP from rank timers: "
              "compute = data + forward + backward (timed alone under `no_sync` after training) + step, all-reduce = "
              "backward-with-sync − backward alone (the gloo ring and waiting for the slowest rank).", "",
              breakdown_table(configs), "## Memory (peak against the device's budget)", "", memory_table(configs)]
    lines += ["## Every device alone (samples/s, in-process single-device training as that device)", "",
              "| config | " + " | ".join(["devices"]) + " |", "|---|---|"]
    for c in configs:
        al = (c.get("alone") or {}).get("samples_per_s") or {}
        pr = c.get("profile_throughput") or {}
        lines.append(f"| {config_name(c)} | " + ", ".join(
            f"{d} {analyze.fmt(al.get(d))} (profile {analyze.fmt(pr.get(d))})" for d in c.get("devices", [])) + " |")
    lines.append("")
    errs = [(config_name(c), s, e) for c in configs for s, e in c.get("errors", {}).items()]
    errs += [(f"{c.get('env')}@{c.get('bandwidth')}", "cluster", c["error"]) for c in res.get("configs", [])
             if "error" in c]
    if errs:
        lines += ["## Failures", ""] + [f"- {n} {s}: `{e.strip()[:300]}`" for n, s, e in errs] + [""]
    tta = res.get("tta")
    lines += ["## Time to accuracy", ""]
    if tta and tta.get("runs"):
        ref = tta.get("reference") or {}
        lines += [f"{tta['model']} to {100 * tta['target']:.0f} % test accuracy (10,000 test samples) on env "
                  f"{tta['env']} at {tta['bandwidth']} Mbit/s, batch {MODEL_BATCH(res, tta['model'])}, evaluated every "
                  f"{tta.get('every')} rounds from round {tta.get('first_check')} on (the full-speed reference run "
                  f"reached it after {ref.get('reached_round')} rounds). Training = the committed rounds' wall time "
                  "(evaluations excluded); whole job = everything from launch, with profiling, planning, deployment "
                  "(again after every evaluation stop for Asteroid, which evaluates at the end of a run and resumes "
                  "from its checkpoint), start-up and the evaluations.", "",
                  "| strategy | rounds | reached | training s | whole job s | test accuracy | samples/s (first segment) |",
                  "|---|---|---|---|---|---|---|"]
        for s in ORDER:
            r = tta["runs"].get(s)
            if r:
                acc = r.get("test_accuracy")
                lines.append(f"| {LABELS[s]} | {r.get('rounds', '–')} | {'yes' if r.get('reached') else 'NO'} | "
                             f"{analyze.fmt(r.get('train_s'))} | {analyze.fmt(r.get('wall_s'))} | "
                             f"{'–' if acc is None else f'{100 * acc:.2f} %'} | {analyze.fmt(r.get('samples_per_s'))} |")
        lines.append("")
    else:
        lines += ["not run in this mode (`bench.py --tta-only` or `--full`)" + (
            f": {tta.get('error')}" if tta and tta.get("error") else ""), ""]
    lines += ["## Recovery (fault-tolerance benchmark)", ""]
    rec = res.get("recovery") or []
    if rec:
        for r in rec:
            if r.get("markdown"):
                lines += [f"From `{r['path']}` (scripts/bench_recovery.sh):", "",
                          r["markdown"].replace("\n# ", "\n#### ").replace("\n## ", "\n#### "), ""]
            else:
                lines += [f"`{r['path']}`:", "", "```json", json.dumps(r["data"], indent=1)[:4000], "```", ""]
    else:
        lines += ["| benchmark | result |", "|---|---|", "| recovery (bench/recovery*) | **not run**: no JSON found "
                  "under bench/recovery* when this report was made |", ""]
    lines += ["## Planner benchmark (`bench_planner`)", ""]
    pl = res.get("planner")
    if pl and pl.get("markdown"):
        lines += [f"`bench_planner {pl['repeats']}`, {pl['seconds']:.0f} s:", "", pl["markdown"].replace(
            "### ", "#### "), ""]
    else:
        lines += ["not run" + (f": {pl.get('error')}" if pl else ""), ""]
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(directory, "table.md"), "w") as f:
        f.write("\n".join(lines[lines.index("## Throughput (samples/s, median round after warm-up)"):
                                lines.index("## Plans and predictions")]))


def MODEL_BATCH(res, model):
    return ((res.get("settings") or {}).get("models_table") or {}).get(model, {}).get("batch", "?")


def plots(res, configs, directory):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    if configs:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(configs) + 2), 4.2))
        width = 0.8 / len(ORDER)
        colors = {"hpp": "#4c72b0", "hpp_ft": "#8fa8d0", "dp": "#dd8452", "pp": "#55a868", "single": "#8172b2",
                  "ddp": "#c44e52"}
        for i, s in enumerate(ORDER):
            xs, ys = [], []
            for k, c in enumerate(configs):
                v = c.get("throughput", {}).get(s)
                if v:
                    xs.append(k + (i - len(ORDER) / 2 + 0.5) * width)
                    ys.append(v)
            ax.bar(xs, ys, width, label=LABELS[s], color=colors[s])
        for k, c in enumerate(configs):
            p = c.get("predicted_hpp")
            if p:
                x = k + (0 - len(ORDER) / 2 + 0.5) * width
                ax.plot([x - width / 2, x + width / 2], [p, p], color="black", lw=2)
        ax.plot([], [], color="black", lw=2, label="hpp predicted")
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels([config_name(c).replace(" ", "\n") for c in configs], fontsize=8)
        ax.set_ylabel("samples/s (median round)")
        ax.set_yscale("log")
        ax.set_title("Throughput per strategy")
        ax.legend(fontsize=7, ncol=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "throughput.png"), dpi=110, bbox_inches="tight")
        plt.close(fig)
        made.append("throughput.png")

        # Time breakdown: one panel per configuration, one bar per device and strategy.
        panels = [c for c in configs if any((c["runs"].get(s) or {}).get("breakdown_ms") for s in ("hpp", "dp", "pp"))]
        if panels:
            cols = min(len(panels), 4)
            rows_n = (len(panels) + cols - 1) // cols
            fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 5.0 * rows_n), squeeze=False)
            for ax in axes.flat[len(panels):]:
                ax.axis("off")
            for ax, c in zip(axes.flat, panels):
                labels, bottoms = [], None
                bars = []
                for s in ("hpp", "hpp_ft", "dp", "pp"):
                    r = c["runs"].get(s) or {}
                    per = r.get("breakdown_ms")
                    if not per:
                        continue
                    n = max(1, r["breakdown"]["rounds"])
                    for dev, v in per.items():
                        labels.append(f"{LABELS[s]} {dev}")
                        bars.append([v[k] / n for k, _, _ in CATS])
                for rk in (c["runs"].get("ddp") or {}).get("ranks", []) or []:
                    mm, cal = rk["median_ms"], rk.get("calibration_ms") or {}
                    bwd = cal.get("backward_ms", 0.0)
                    comp = mm["forward_ms"] + mm["step_ms"] + mm["data_ms"] + bwd
                    ar = mm["backward_allreduce_ms"] - bwd
                    labels.append(f"DDP {rk['device']}")
                    bars.append([comp, 0, 0, ar, 0, max(0.0, mm["ms"] - comp - ar)])
                import numpy as np
                arr = np.array(bars)
                bottoms = np.zeros(len(bars))
                for j, (k, name, col) in enumerate(CATS):
                    ax.barh(range(len(bars)), arr[:, j], left=bottoms, color=col, label=name, edgecolor="none")
                    bottoms += arr[:, j]
                ax.set_yticks(range(len(bars)))
                ax.set_yticklabels(labels, fontsize=6)
                ax.invert_yaxis()
                ax.set_xscale("log" if arr.sum(axis=1).max() / max(1e-9, arr.sum(axis=1).min()) > 30 else "linear")
                ax.set_xlabel("ms per round")
                ax.set_title(config_name(c), fontsize=9)
            axes[0][0].legend(fontsize=6, loc="lower right")
            fig.suptitle("Time per round of every device (steady rounds)", fontsize=10)
            fig.tight_layout()
            fig.savefig(os.path.join(directory, "breakdown.png"), dpi=100, bbox_inches="tight")
            plt.close(fig)
            made.append("breakdown.png")
    tta = res.get("tta")
    if tta and tta.get("runs"):
        fig, ax = plt.subplots(figsize=(6, 3))
        names = [s for s in ORDER if tta["runs"].get(s) and tta["runs"][s].get("train_s")]
        ax.barh([LABELS[s] for s in names], [tta["runs"][s]["train_s"] for s in names], color="#4c72b0",
                label="training")
        ax.barh([LABELS[s] for s in names], [max(0, (tta["runs"][s].get("wall_s") or 0) - tta["runs"][s]["train_s"])
                                             for s in names],
                left=[tta["runs"][s]["train_s"] for s in names], color="#cccccc", label="start-up, profiling, eval")
        ax.set_xlabel("seconds")
        ax.set_title(f"{tta['model']} to {100 * tta['target']:.0f} % on env {tta['env']} @ {tta['bandwidth']} Mbit/s")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "tta.png"), dpi=110)
        plt.close(fig)
        made.append("tta.png")
    return made
