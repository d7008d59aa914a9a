"""What the benchmark scripts share: running one command with its output in
a log file, bounded in time, and reading JSON Lines files (metrics.jsonl,
faults.jsonl) from the run folders `asteroid train` leaves."""
import json
import os
import subprocess


def run(cmd, log, timeout, check=True):
    """Runs `cmd` with stdout and stderr to `log`; kills it after `timeout`
    seconds; raises with the log's tail when it fails (unless not `check`)."""
    print("  $", " ".join(cmd), flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{cmd[1]} timed out after {timeout} s (log: {log})")
    if code != 0 and check:
        tail = open(log).read()[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} failed with {code}:\n{tail}")


def lines(path):
    """The JSON objects of a JSON Lines file, [] when it does not exist."""
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out
