#!/usr/bin/python3
"""Tests of the benchmark's parsing and analysis: /usr/bin/python3 bench/report/test_analyze.py"""
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "ddp"))

import analyze  # noqa: E402


def X(pid, cat, ts, dur, rnd=0, mb=0, stage=0, member=0):
    return {"name": cat, "cat": cat, "ph": "X", "ts": ts, "dur": dur, "pid": pid, "tid": stage * 100 + member,
            "args": {"round": rnd, "microbatch": mb, "bytes": 0}}


def two_stage_round():
    """Stage 0 on device a, stage 1 on device b, one micro-batch (times in us):

    a: F0 [0, 100), send [100, 110), waits, B0 [400, 500), step [500, 520)
    b: receive at 250 (transfer 110 -> 250), F0 [260, 300), B0 [300, 350), send [350, 360), step [360, 370)
    a: receive gradient at 390
    """
    meta = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "a"}},
            {"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "b"}}]
    ev = [X(1, "forward", 0, 100), X(1, "send", 100, 10), X(2, "receive", 250, 0, stage=1),
          X(2, "forward", 260, 40, stage=1), X(2, "backward", 300, 50, stage=1), X(2, "send", 350, 10, stage=1),
          X(2, "all-reduce", 360, 0, stage=1), X(2, "optimizer-step", 360, 10, stage=1),
          X(1, "receive", 390, 0), X(1, "backward", 400, 100), X(1, "all-reduce", 500, 0),
          X(1, "optimizer-step", 500, 20)]
    return meta + ev


class TraceBreakdown(unittest.TestCase):
    def test_two_stages(self):
        per, s = analyze.trace_breakdown(two_stage_round())
        self.assertEqual(s["rounds"], 1)
        self.assertAlmostEqual(s["window_ms"], 0.52)
        a, b = per["a"], per["b"]
        self.assertAlmostEqual(a["compute"], 0.22)
        self.assertAlmostEqual(a["send"], 0.01)
        # a waits [110, 400) for the gradient of B0: b's backward ends at 350
        # (bubble 110..350), arrives at 390 (transfer 350..390), then 10 us
        # of scheduling (idle).
        self.assertAlmostEqual(a["bubble"], 0.24)
        self.assertAlmostEqual(a["transfer_wait"], 0.04)
        self.assertAlmostEqual(a["idle"], 0.52 - 0.22 - 0.01 - 0.24 - 0.04)
        # b waits [0, 260) for F0: a's forward ends at 100 (bubble 0..100),
        # arrives at 250 (transfer 100..250), 10 us idle; after its step, idle to 520.
        self.assertAlmostEqual(b["bubble"], 0.10)
        self.assertAlmostEqual(b["transfer_wait"], 0.15)
        self.assertAlmostEqual(b["compute"], 0.10)
        self.assertAlmostEqual(b["idle"], 0.52 - 0.10 - 0.01 - 0.10 - 0.15)
        self.assertAlmostEqual(s["bubble_fraction"], 1 - (0.22 + 0.10) / (2 * 0.52))
        for v in per.values():
            self.assertGreaterEqual(min(v.values()), 0)

    def test_rounds_filter(self):
        ev = two_stage_round() + [dict(e, args=dict(e["args"], round=1), ts=e["ts"] + 1000)
                                  for e in two_stage_round() if e.get("ph") == "X"]
        per, s = analyze.trace_breakdown(ev, rounds={1})
        self.assertEqual(s["rounds"], 1)
        self.assertAlmostEqual(per["a"]["compute"], 0.22)
        per, s = analyze.trace_breakdown(ev)
        self.assertEqual(s["rounds"], 2)
        self.assertAlmostEqual(per["a"]["compute"], 0.44)

    def test_data_parallel_group(self):
        meta = [{"name": "process_name", "ph": "M", "pid": p, "args": {"name": n}} for p, n in ((1, "a"), (2, "b"))]
        ev = [X(1, "forward", 0, 100), X(1, "backward", 100, 200), X(1, "all-reduce", 300, 500),
              X(1, "optimizer-step", 800, 10), X(2, "forward", 0, 300, member=1), X(2, "backward", 300, 400, member=1),
              X(2, "all-reduce", 700, 100, member=1), X(2, "optimizer-step", 800, 10, member=1)]
        per, s = analyze.trace_breakdown(meta + ev)
        self.assertAlmostEqual(per["a"]["all_reduce"], 0.5)
        self.assertAlmostEqual(per["b"]["all_reduce"], 0.1)
        self.assertAlmostEqual(per["a"]["bubble"], 0)
        self.assertAlmostEqual(per["a"]["idle"], 0)


class Numbers(unittest.TestCase):
    def test_interp_cost_model_rule(self):
        b, t = [1, 4, 16], [1.0, 2.0, 8.0]
        self.assertAlmostEqual(analyze.interp(b, t, 0.5), 0.5)
        self.assertAlmostEqual(analyze.interp(b, t, 2), 1 + 1 / 3)
        self.assertAlmostEqual(analyze.interp(b, t, 10), 5.0)
        self.assertAlmostEqual(analyze.interp(b, t, 32), 16.0)

    def test_device_round_and_eta(self):
        profile = {"devices": {"x": {"batch": [1, 2], "fwd_ms": [[1, 2], [1, 2]], "bwd_ms": [[2, 4], [2, 4]]},
                               "y": {"batch": [1, 2], "fwd_ms": [[2, 4], [2, 4]], "bwd_ms": [[4, 8], [4, 8]]}}}
        self.assertAlmostEqual(analyze.device_round_ms(profile, "x", 4), 24.0)
        tp = analyze.per_device_throughput(profile, 4)
        self.assertAlmostEqual(tp["x"], 4000 / 24)
        self.assertAlmostEqual(tp["y"], 4000 / 48)
        self.assertAlmostEqual(analyze.eta(250.0, tp), 1.0)

    def test_median_throughput_and_metrics(self):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for i, ms in enumerate([500, 100, 110, 90, 100]):
                f.write(json.dumps({"round": i, "loss": 1, "samples": 64, "ms": ms, "t_s": i}) + "\n")
            f.write(json.dumps({"event": "failure", "text": "x"}) + "\n")
        rows = analyze.read_metrics(f.name)
        os.unlink(f.name)
        self.assertEqual(len(rows), 5)
        self.assertAlmostEqual(analyze.median_throughput([r["ms"] for r in rows], 64, 1), 64 * 1000 / 100)
        self.assertAlmostEqual(analyze.median_throughput([200], 64, 3), 320)

    def test_prediction_error_and_table(self):
        self.assertAlmostEqual(analyze.prediction_error(90, 100), -0.1)
        self.assertIsNone(analyze.prediction_error(None, 100))
        c = {"env": "C", "bandwidth": 100, "model": "m", "batch": 64,
             "throughput": {"hpp": 1000.0, "dp": 250.0, "pp": 400.0, "single": 800.0, "ddp": 500.0},
             "predicted_hpp": 1100.0, "eta": 0.5, "prediction_error": -0.0909, "bubble_fraction": {"hpp": 0.25},
             "plan_text": {"hpp": "a L0-3 / b L4-5, M=4"}, "errors": {}}
        row = analyze.table_row(c)
        cells = [x.strip() for x in row.strip().strip("|").split("|")]
        header = [x.strip() for x in analyze.TABLE_HEADER.splitlines()[0].strip("|").split("|")]
        self.assertEqual(len(cells), len(header))
        self.assertEqual(cells[header.index("hpp/dp")], "4.00x")
        self.assertEqual(cells[header.index("hpp/pp")], "2.50x")
        self.assertEqual(cells[header.index("hpp/DDP")], "2.00x")
        self.assertEqual(cells[header.index("pred. error")], "-9 %")
        self.assertEqual(cells[header.index("hpp plan")], "a L0-3 / b L4-5, M=4")
        c["throughput"]["dp"] = None
        c["errors"]["dp"] = "boom"
        self.assertIn("failed", analyze.table_row(c))

    def test_plan_text(self):
        plan = {"microbatches": 4, "stages": [{"layers": [0, 3], "devices": [{"id": "a"}, {"id": "b"}]},
                                              {"layers": [3, 6], "devices": [{"id": "c"}]}]}
        self.assertEqual(analyze.plan_text(plan), "a,b L0-2 / c L3-5, M=4")


class Zoo(unittest.TestCase):
    def test_parameter_counts_match_docs(self):
        import zoo
        for name, expected in zoo.PARAMETERS.items():
            self.assertEqual(zoo.parameter_count(zoo.build_model(name)), expected, name)

    def test_local_split_as_ddp(self):
        import ddp_train
        parts = [ddp_train.local_range(64, 6, r) for r in range(6)]
        self.assertEqual([e - b for b, e in parts], [11, 11, 11, 11, 10, 10])
        self.assertEqual(parts[0][0], 0)
        self.assertEqual(parts[-1][1], 64)

    def test_sample_order_is_a_permutation(self):
        import data
        order = data.epoch_order(1000, 7, 0)
        self.assertEqual(sorted(order.tolist()), list(range(1000)))
        self.assertEqual(data.round_indices(1000, 10, 7, 3).tolist(), order[30:40].tolist())


if __name__ == "__main__":
    unittest.main()
