#!/usr/bin/python3
"""PyTorch DistributedDataParallel peer of an Asteroid run (bench/README in docs/benchmarks.md).

One process per emulated device, gloo backend, the mini-batch split equally
over the ranks as DDP does (batch / world size, the remainder to the first
ranks), the same model (bench/ddp/zoo.py, layer for layer and weight for
weight as compute/layers.cpp), data and sample order (bench/ddp/data.py), loss
convention and optimizer as Asteroid. Run every rank as its device:

    asteroid cluster exec --dir D --device ID -- /usr/bin/python3 bench/ddp/ddp_train.py \
        --model fmnist-cnn --rank R --world-size N --master-addr ADDR_OF_RANK_0 --master-port P \
        --batch 64 --rounds 30 --out result.json

Rank 0 writes the JSON (per-round times, median samples/s after warm-up, phase
times and peak memory of every rank, optional test accuracy / time to a target
accuracy). `--world-size 1 --no-ddp` trains on one process without
torch.distributed (the single-device reference).

Needs Debian's /usr/bin/python3 with python3-torch (1.13) and numpy.
"""
import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time

T_IMPORT0 = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import data  # noqa: E402
import zoo  # noqa: E402

IMPORT_S = time.time() - T_IMPORT0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fmnist-cnn", choices=sorted(zoo.SPECS))
    p.add_argument("--batch", type=int, default=64, help="mini-batch (all ranks together)")
    p.add_argument("--rounds", type=int, default=30, help="rounds to run (an upper bound with --target-acc)")
    p.add_argument("--warmup", type=int, default=3, help="rounds left out of the median")
    p.add_argument("--optimizer", default="momentum", choices=["sgd", "momentum", "adam"])
    p.add_argument("--lr", type=float, default=0.0, help="0: 0.05 (sgd, momentum) or 0.001 (adam), as Asteroid")
    p.add_argument("--seed", type=int, default=7, help="initial weights and sample order (as Asteroid's --seed)")
    p.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)))
    p.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    p.add_argument("--master-addr", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
    p.add_argument("--master-port", type=int, default=int(os.environ.get("MASTER_PORT", 29500)))
    p.add_argument("--timeout", type=float, default=600, help="seconds for rendezvous and every collective")
    p.add_argument("--no-ddp", action="store_true", help="world size 1 without torch.distributed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plain-linear", action="store_true",
                   help="torch.nn.functional.linear (reference BLAS) instead of oneDNN, unlike Asteroid")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate test accuracy every N rounds (clock paused)")
    p.add_argument("--eval-from", type=int, default=0, help="first round to evaluate after (with --eval-every)")
    p.add_argument("--target-acc", type=float, default=0.0, help="stop at this test accuracy (with --eval-every)")
    p.add_argument("--test-samples", type=int, default=0, help="first N test samples (0: all)")
    p.add_argument("--data-dir", default=data.FMNIST_DIR)
    p.add_argument("--out", default="", help="result JSON (rank 0)")
    p.add_argument("--weights-out", default="", help="final flat weights, Asteroid's ASTWGT01 format (rank 0)")
    p.add_argument("--calibrate", type=int, default=3,
                   help="after training, time N forward+backward passes without gradient sync (DDP no_sync) "
                        "to split backward compute from the all-reduce; nothing is stepped")
    p.add_argument("--log-losses", action="store_true",
                   help="all-reduce every round's loss for the log (outside the timed part)")
    return p.parse_args(argv)


def local_range(batch, world, rank):
    """Equal split, the remainder to the first ranks (Asteroid's dp rule too)."""
    base, extra = divmod(batch, world)
    begin = rank * base + min(rank, extra)
    return begin, begin + base + (1 if rank < extra else 0)


def make_optimizer(name, params, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr or 0.05)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr or 0.05, momentum=0.9)
    return torch.optim.Adam(params, lr=lr or 0.001, betas=(0.9, 0.999), eps=1e-8)


class Throttle:
    """The testbed's throttle mode (no cgroups): a device with ASTEROID_CPU_SHARE S
    sleeps so that a round of C CPU seconds takes C / S wall seconds."""

    def __init__(self):
        self.share = float(os.environ.get("ASTEROID_CPU_SHARE", "0") or 0)

    def start(self):
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def finish(self):
        if self.share <= 0:
            return
        cpu = time.process_time() - self.cpu0
        wait = cpu / self.share - (time.perf_counter() - self.wall0)
        if wait > 0:
            time.sleep(wait)


def evaluate(model, test, samples):
    n = test.size if samples <= 0 else min(samples, test.size)
    correct, loss = 0, 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for b in range(0, n, 500):
            idx = list(range(b, min(n, b + 500)))
            x, y = test.get(idx)
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += int((out.argmax(1) == y).sum())
    model.train(was_training)
    return correct / n, loss / n, n


def gloo_interface():
    """The interface that carries ASTEROID_DEVICE_ADDRESS (eth0 in a device namespace)."""
    addr = os.environ.get("ASTEROID_DEVICE_ADDRESS", "")
    try:
        import fcntl
        import struct
        names = os.listdir("/sys/class/net")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for name in names:
            try:
                raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
                if socket.inet_ntoa(raw[20:24]) == addr:
                    return name
            except OSError:
                pass
    except Exception:
        pass
    return "eth0" if os.path.exists("/sys/class/net/eth0") and addr else ""


def main(argv=None):
    a = parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    zoo.USE_MKLDNN_LINEAR = zoo.USE_MKLDNN_LINEAR and not a.plain_linear
    use_ddp = not a.no_ddp
    if a.no_ddp and a.world_size != 1:
        raise SystemExit("--no-ddp needs --world-size 1")
    if use_ddp:
        from datetime import timedelta
        if "GLOO_SOCKET_IFNAME" not in os.environ:
            iface = gloo_interface()
            if iface:
                os.environ["GLOO_SOCKET_IFNAME"] = iface
        dist.init_process_group("gloo", init_method=f"tcp://{a.master_addr}:{a.master_port}", rank=a.rank,
                                world_size=a.world_size, timeout=timedelta(seconds=a.timeout))
    t_rendezvous = time.time()

    train = data.open_dataset(a.model, True, a.data_dir)
    test = data.open_dataset(a.model, False, a.data_dir) if (a.eval_every > 0 or a.out) and a.rank == 0 else None
    model = zoo.build_model(a.model, a.seed)
    net = torch.nn.parallel.DistributedDataParallel(model) if use_ddp else model
    opt = make_optimizer(a.optimizer, net.parameters(), a.lr)
    lr = opt.param_groups[0]["lr"]
    begin, end = local_range(a.batch, a.world_size, a.rank)
    local = end - begin
    if local <= 0:
        raise SystemExit(f"rank {a.rank}: no sample of a batch of {a.batch} over {a.world_size} ranks")
    # The sample order of every round of the run, computed before the clock
    # starts (Asteroid's C++ shuffle is ~1 ms; a pure-Python one is not).
    for r in range(0, a.rounds, max(1, train.size // a.batch)):
        data.round_indices(train.size, a.batch, a.seed, r)
    throttle = Throttle()
    if use_ddp:
        dist.barrier()
    t_ready = time.time()

    rows, losses, evals = [], [], []
    reached = None
    train_s = 0.0  # training wall time, evaluations excluded
    for r in range(a.rounds):
        throttle.start()
        t0 = time.perf_counter()
        idx = data.round_indices(train.size, a.batch, a.seed, r)[begin:end]
        x, y = train.get(idx)
        t1 = time.perf_counter()
        out = net(x)
        # Sum of this rank's cross entropy over the whole mini-batch size;
        # DDP averages the ranks' gradients, so scale by the world size: the
        # result is the gradient of the mini-batch mean loss (Asteroid's rule).
        loss = F.cross_entropy(out, y, reduction="sum") * (a.world_size / a.batch)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        throttle.finish()
        t5 = time.perf_counter()
        rows.append({"round": r, "ms": (t5 - t0) * 1e3, "data_ms": (t1 - t0) * 1e3, "forward_ms": (t2 - t1) * 1e3,
                     "backward_allreduce_ms": (t3 - t2) * 1e3, "step_ms": (t4 - t3) * 1e3})
        train_s += t5 - t0
        rows[-1]["t_s"] = train_s
        if a.log_losses:
            v = torch.tensor([loss.item() / a.world_size])
            if use_ddp:
                dist.all_reduce(v)
            losses.append(v.item())
        if a.eval_every > 0 and (r + 1) % a.eval_every == 0 and r + 1 >= a.eval_from:
            flag = torch.zeros(1)
            if a.rank == 0:
                acc, tl, n = evaluate(model, test, a.test_samples)
                evals.append({"round": r + 1, "accuracy": acc, "loss": tl, "samples": n, "train_s": train_s})
                print(f"round {r + 1}: test accuracy {100 * acc:.2f} % ({n} samples), {train_s:.1f} s of training",
                      flush=True)
                if a.target_acc > 0 and acc >= a.target_acc:
                    flag[0] = 1
            if use_ddp:
                dist.broadcast(flag, 0)
            if flag[0] > 0:
                reached = r + 1
                break
    t_end = time.time()

    # Backward compute alone (no all-reduce): a few passes under no_sync on the
    # last round's samples; the gradients are dropped, nothing is stepped.
    calib = []
    if a.calibrate > 0 and rows:
        idx = data.round_indices(train.size, a.batch, a.seed, len(rows) - 1)[begin:end]
        x, y = train.get(idx)
        ctx = net.no_sync() if use_ddp else torch.enable_grad()
        with ctx:
            for _ in range(a.calibrate):
                throttle.start()
                c0 = time.perf_counter()
                out = net(x)
                loss = F.cross_entropy(out, y, reduction="sum") * (a.world_size / a.batch)
                c1 = time.perf_counter()
                loss.backward()
                c2 = time.perf_counter()
                throttle.finish()
                calib.append({"forward_ms": (c1 - c0) * 1e3, "backward_ms": (c2 - c1) * 1e3})
        opt.zero_grad(set_to_none=False)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mine = {"rank": a.rank, "device": os.environ.get("ASTEROID_DEVICE_ID", socket.gethostname()),
            "local_batch": local, "peak_rss_bytes": peak,
            "median_ms": {k: statistics.median(row[k] for row in rows[a.warmup:] or rows)
                          for k in ("ms", "data_ms", "forward_ms", "backward_allreduce_ms", "step_ms")}}
    if calib:
        mine["calibration_ms"] = {k: statistics.median(c[k] for c in calib) for k in ("forward_ms", "backward_ms")}
    if use_ddp:
        everyone = [None] * a.world_size
        dist.all_gather_object(everyone, mine)
    else:
        everyone = [mine]

    if a.rank == 0:
        final = None
        if test is not None and reached is None and a.out:
            acc, tl, n = evaluate(model, test, a.test_samples)
            final = {"round": len(rows), "accuracy": acc, "loss": tl, "samples": n}
        steady = rows[a.warmup:] if len(rows) > a.warmup else rows
        median_ms = statistics.median(row["ms"] for row in steady)
        result = {
            "format": "asteroid-ddp-bench/1", "model": a.model, "world_size": a.world_size, "ddp": use_ddp,
            "backend": "gloo" if use_ddp else None, "batch": a.batch, "optimizer": a.optimizer, "lr": lr,
            "seed": a.seed, "threads": a.threads, "linear": "torch" if a.plain_linear else "mkldnn",
            "rounds": len(rows), "warmup": a.warmup, "round_ms": [row["ms"] for row in rows],
            "median_round_ms": median_ms, "samples_per_s": a.batch * 1000.0 / median_ms,
            "samples_per_s_mean": a.batch * len(steady) * 1000.0 / sum(row["ms"] for row in steady),
            "train_seconds": train_s, "import_seconds": IMPORT_S, "rendezvous_seconds": t_rendezvous - t_start,
            "setup_seconds": t_ready - t_start, "wall_seconds": t_end - t_start + IMPORT_S,
            "ranks": everyone, "rows": rows, "losses": losses, "evals": evals, "final_eval": final,
            "target_accuracy": a.target_acc or None, "reached_round": reached,
            "time_to_target_s": (rows[reached - 1]["t_s"] if reached else None),
        }
        if a.out:
            tmp = a.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(result, f, indent=1)
            os.replace(tmp, a.out)
        if a.weights_out:
            w = zoo.flat_weights(model).numpy().astype("<f4")
            with open(a.weights_out, "wb") as f:
                f.write(b"ASTWGT01")
                f.write(int(w.size).to_bytes(8, "little"))
                f.write(w.tobytes())
        print(f"ddp {a.model}: world {a.world_size}, batch {a.batch}, {len(rows)} rounds, median round "
              f"{median_ms:.1f} ms, {result['samples_per_s']:.1f} samples/s", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if use_ddp:
        # Everyone waits for rank 0's evaluation and file, then leaves without
        # the process group's teardown (gloo's destroy can hang when the ranks
        # reach it at very different times, as throttled devices do).
        dist.barrier()
        time.sleep(2.0 if a.rank == 0 else 0.0)
        os._exit(0)


if __name__ == "__main__":
    main()
