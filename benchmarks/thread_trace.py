"""Where the threads of a training process run, epoch by epoch: the evidence behind a slow level.

Starts ``pyrovae.fit`` (the default 12-epoch MNIST run of ``benchmarks/peers.py``'s
``pyrovae-defaults``, or ``--implementation numpyro`` for NumPyro's jit-compiled SVI, ``matmul`` and ``memory`` for fixed
loads of matrix products and of streamed memory: the machine's own variation) in a child
process and samples, every ``--interval`` seconds, ``/proc/stat`` (each CPU's busy, idle and
steal time) and, for every thread of the child, ``/proc/PID/task/TID/stat`` (its CPU time and the
CPU it last ran on) and ``status`` (voluntary and involuntary context switches). Per epoch it
reports the epoch's seconds, each busy thread's share of a CPU, how often the two busiest threads
were last seen on the same CPU, their migrations, the machine's steal time, and the context
switches: a second thread that stops contributing shows as a share far below 1 or as the two
sharing one CPU; a hypervisor that takes a vCPU away shows as steal.

    PYROVAE_DATA=../shared/data python benchmarks/thread_trace.py [--epochs 12] [--env OMP_WAIT_POLICY=active]

Run it alone.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

CHILD = r"""
import sys, time
sys.path.insert(0, {bench!r})
import peers
peers.epoch_gate = lambda: print("EPOCH", flush=True)  # each epoch's start
epochs = {epochs}
if {implementation!r} == "numpyro":
    seconds = peers.run_numpyro(epochs)
elif {implementation!r} == "matmul":  # a fixed load: 250 products of 2048 x 400 x 784 an "epoch"
    import torch
    a, b = torch.randn(2048, 400), torch.randn(400, 784)
    for _ in range(epochs):
        peers.epoch_gate()
        for _ in range(250):
            a @ b
elif {implementation!r} == "memory":  # a fixed memory-bound load: 64 MB streamed 2 x 330 times an "epoch"
    import torch
    a, b = torch.randn(16_000_000), torch.empty(16_000_000)
    for _ in range(epochs):
        peers.epoch_gate()
        for _ in range(330):
            torch.mul(a, 1.0001, out=b)
            torch.mul(b, 0.9999, out=a)
else:
    seconds = peers.run_pyrovae(epochs, "defaults")
print("EPOCH", flush=True)  # the last one's end
"""


def cpu_times():
    """Per CPU: (busy, idle, steal) in ticks."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *values = line.split()
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
            out[name] = (user + nice + system + irq + softirq, idle + iowait, steal)
    return out


def thread_sample(pid):
    """Per thread id: (name, utime + stime ticks, last CPU, voluntary, involuntary switches, stime
    ticks, minor page faults)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        # fields from the state (field 3): utime 14, stime 15, processor 39 (1-based in proc(5))
        ticks = int(fields[11]) + int(fields[12])
        system_ticks, minor_faults = int(fields[12]), int(fields[7])
        processor = int(fields[36])
        switches = {k: int(v) for k, v in (line.split(":") for line in status.splitlines()
                                           if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))}
        out[int(task.name)] = (name, ticks, processor, switches.get("voluntary_ctxt_switches", 0),
                               switches.get("nonvoluntary_ctxt_switches", 0), system_ticks, minor_faults)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--implementation", choices=("pyrovae-defaults", "numpyro", "matmul", "memory"), default="pyrovae-defaults",
                        help="matmul, memory: a fixed load of float32 products or of streamed memory, for the "
                             "machine's own variation")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the child (e.g. OMP_WAIT_POLICY=active)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    env = dict(os.environ, **dict(item.split("=", 1) for item in args.env))
    code = CHILD.format(bench=str(ROOT / "benchmarks"), epochs=args.epochs, implementation=args.implementation)
    child = subprocess.Popen([sys.executable, "-u", "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    os.set_blocking(child.stdout.fileno(), False)
    samples, epoch_ends, buffer = [], [], ""
    while child.poll() is None:
        now = time.perf_counter()
        try:
            samples.append((now, cpu_times(), thread_sample(child.pid)))
        except (FileNotFoundError, ProcessLookupError):
            break
        buffer += (child.stdout.read() or b"").decode()
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            if line.startswith("EPOCH"):
                epoch_ends.append(time.perf_counter())
        time.sleep(args.interval)
    buffer += (child.stdout.read() or b"").decode()
    rows = summarize(samples, epoch_ends)  # the marks: each epoch's start, then the last one's end
    for row in rows:
        print(json.dumps(row))
    if args.out:
        Path(args.out).write_text(json.dumps({"implementation": args.implementation, "env": args.env,
                                              "interval": args.interval, "epochs": rows}, indent=1) + "\n")


def summarize(samples, epoch_ends):
    rows = []
    for index, (start, end) in enumerate(zip(epoch_ends, epoch_ends[1:]), start=1):
        inside = [s for s in samples if start <= s[0] <= end]
        if len(inside) < 3:
            continue
        first, last = inside[0], inside[-1]
        seconds = last[0] - first[0]
        shares = {}
        for tid, (name, ticks, *_rest) in last[2].items():
            before = first[2].get(tid)
            if before is not None:
                shares[tid] = (name, (ticks - before[1]) / TICKS / seconds)
        busy = sorted(shares, key=lambda tid: -shares[tid][1])[:2]
        same = sum(1 for s in inside if len(busy) == 2 and all(t in s[2] for t in busy)
                   and s[2][busy[0]][2] == s[2][busy[1]][2])
        migrations = {tid: sum(1 for a, b in zip(inside, inside[1:]) if tid in a[2] and tid in b[2]
                               and a[2][tid][2] != b[2][tid][2]) for tid in busy}
        switches = {tid: (last[2][tid][3] - first[2][tid][3], last[2][tid][4] - first[2][tid][4]) for tid in busy}
        system = {tid: (last[2][tid][5] - first[2][tid][5]) / TICKS / seconds for tid in busy}
        faults = {tid: last[2][tid][6] - first[2][tid][6] for tid in busy}
        steal = {cpu: (last[1][cpu][2] - first[1][cpu][2]) / TICKS / seconds for cpu in last[1]}
        idle = {cpu: (last[1][cpu][1] - first[1][cpu][1]) / TICKS / seconds for cpu in last[1]}
        rows.append({"epoch": index, "seconds": round(end - start, 3),
                     "threads": [{"name": shares[t][0], "cpu_share": round(shares[t][1], 3),
                                  "system_share": round(system[t], 3), "minor_faults": faults[t],
                                  "migrations": migrations[t], "voluntary_switches": switches[t][0],
                                  "involuntary_switches": switches[t][1]} for t in busy],
                     "same_cpu_share": round(same / len(inside), 3),
                     "steal": {k: round(v, 3) for k, v in steal.items()},
                     "idle": {k: round(v, 3) for k, v in idle.items()},
                     "other_threads_cpu": round(sum(v[1] for t, v in shares.items() if t not in busy), 3)})
    return rows


if __name__ == "__main__":
    main()
