"""Seconds per MNIST epoch of the same VAE in pyrovae and its peers, in one run, back to back and
repeated with the order interleaved (each measurement in a fresh process, so no library's threads
or caches carry over to the next). With ``--lockstep`` (on with ``--defaults``) the processes of
a repeat are alive at once and take turns epoch by epoch, one computing at a time, so that a slow
stretch of the machine falls on the same epoch of each; the table then adds each pyrovae row's
paired ratio (its epoch over the fastest peer's same epoch), with and without its ELBO report:

- ``pyrovae`` (``fit``, ``loss="meanfield"``, the whole step compiled, eight steps a call),
  ``pyrovae-defaults`` (``fit`` with no compile or steps option, as a user calls it; ``--defaults``
  runs it beside ``pyrovae`` and NumPyro), ``pyrovae-defaults-cold`` (the same in an empty user cache,
  as a user's first run on a machine: no measured kernel choice, no compiled step kept),
  ``pyrovae-bf16`` (the defaults with ``precision="bf16"``,
  opt-in) and ``pyrovae-eager`` (``compile="off"``);
- ``torch-eager``: the same VAE as a plain PyTorch loop (``benchmarks/common.py``);
- ``torch-compiled``: that loop with the loss under ``torch.compile`` and Adam's fused kernel;
- ``numpyro``: NumPyro's SVI with ``TraceMeanField_ELBO``, the whole epoch under ``jax.jit``
  (``lax.fori_loop`` over the batches), as NumPyro's ``examples/vae.py`` trains;
- ``pythae``: pythae's ``BaseTrainer`` with its ``VAE`` and the same networks (BCE reconstruction).

The VAE: 784-400-50 ReLU MLPs, Bernoulli likelihood, closed-form KL, batch 128, Adam 1e-3, the
60000 MNIST training images dynamically binarized (pythae: binarized once; it has no per-step
binarization). Each process trains ``--epochs`` epochs; the table gives the first epoch (compile
included) and the median of the others, and the ratios of the steady epochs to the fastest peer.
pyrovae's epoch is its whole run per epoch: ``fit``'s wall time, its per-epoch ELBO report on
its default 2000 training images (``report_examples``; 10000 up to 0.3) included (the peers
report nothing).

    pip install -e ".[bench]"      # numpyro, jax, pythae (each skipped with a message where absent)
    PYROVAE_DATA=../shared/data python benchmarks/peers.py [--epochs 3] [--repeats 2]
    PYROVAE_DATA=../shared/data python benchmarks/peers.py --defaults --epochs 12 --repeats 4

Run it alone: another process on the same cores distorts every column.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
IMPLEMENTATIONS = ["pyrovae", "pyrovae-defaults", "pyrovae-defaults-cold", "pyrovae-bf16", "pyrovae-eager", "torch-eager", "torch-compiled", "numpyro", "pythae"]
BATCH, HIDDEN, LATENT, LR = 128, 400, 50, 1e-3
RESULTS = ROOT / "benchmarks" / "results-peers-cpu.json"
DEFAULTS_RESULTS = ROOT / "benchmarks" / "results-peers-defaults-cpu.json"  # --defaults keeps its own record
UNPAIRED_RESULTS = ROOT / "benchmarks" / "results-peers-unpaired-cpu.json"  # --defaults --unpaired
LOCKSTEP = False  # set in a child of --lockstep: wait for the parent's word before each epoch


def epoch_gate():
    """In a --lockstep child: say so and wait until the parent lets this process run its next
    epoch (the wait lies outside every epoch's seconds); a no-op otherwise."""
    if LOCKSTEP:
        print("WAIT", flush=True)
        if not sys.stdin.readline():
            raise SystemExit("the parent of this --lockstep child has gone")


# -- each implementation, run in its own process: returns the seconds of each epoch ---------------
def run_pyrovae(epochs, compile_mode):
    import torch

    import pyrovae

    train = pyrovae.datasets.load("mnist", split="train")
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 28, 28), latent_dim=LATENT, hidden=(HIDDEN,))

    class Gate(pyrovae.train.Callback):  # waits between epochs: outside the epochs' seconds, changes no option
        def on_fit_start(self, trainer):
            epoch_gate()

        def on_epoch_end(self, trainer, row):
            if trainer.epoch < epochs:
                epoch_gate()

    class Facts(pyrovae.train.Callback):  # what the run chose: compiled or eager (and why), the linear kernel
        def __init__(self):
            self.seen = {}

        def on_fit_start(self, trainer):
            compiled = trainer.compiled
            self.seen.update(compile_note=trainer.compile_note,
                             linear_kernel=getattr(compiled, "linear_kernel", None) if compiled else None,
                             user_cache=os.environ.get("XDG_CACHE_HOME", "~/.cache"))

    gate = [Gate()]
    if compile_mode in ("defaults", "bf16"):  # exactly a user's plain call: no compile or steps flags
        precision = {"precision": "bf16"} if compile_mode == "bf16" else {}
        facts = Facts()
        history = pyrovae.fit(vae, train, epochs=epochs, batch_size=BATCH, lr=LR, loss="meanfield", progress=False,
                              callbacks=gate + [facts], **precision)
        return [row["seconds"] for row in history], {"compile_seconds": history[0].get("compile_seconds"),
                                                     "train_seconds": [row["train_seconds"] for row in history],
                                                     **facts.seen}
    # the whole step compiled from the start, eight steps a call: the tuned row of every round (the
    # defaults now take nine here, which divides MNIST's 468 full batches; auto_steps_per_call)
    history = pyrovae.fit(vae, train, epochs=epochs, batch_size=BATCH, lr=LR, loss="meanfield", progress=False,
                          device="cpu", compile=compile_mode, steps_per_call=8 if compile_mode == "on" else 0,
                          callbacks=gate)
    return [row["seconds"] for row in history], {"compile_seconds": history[0].get("compile_seconds"),
                                                 "train_seconds": [row["train_seconds"] for row in history]}


def run_torch(epochs, compiled):
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from common import PlainVAE, mnist

    data = mnist("train").flatten(1)
    torch.manual_seed(0)
    model = PlainVAE(784, HIDDEN, LATENT)
    if compiled:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
        loss_fn = torch.compile(lambda x: model.loss(x, "meanfield", 1), dynamic=False)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, foreach=True)
        loss_fn = lambda x: model.loss(x, "meanfield", 1)  # noqa: E731
    seconds = []
    for epoch in range(epochs):
        epoch_gate()
        start = time.perf_counter()
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
        steps = len(data) // BATCH  # full batches only: one graph under compile, as NumPyro runs
        for i in range(steps):
            xb = torch.bernoulli(data[order[i * BATCH:(i + 1) * BATCH]])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(xb)
            loss.backward()
            optimizer.step()
        float(loss)
        seconds.append(time.perf_counter() - start)
    return seconds, {}


def run_numpyro(epochs):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from jax import lax
    from jax.example_libraries import stax
    from numpyro.infer import SVI, TraceMeanField_ELBO

    import pyrovae

    data = jnp.asarray(pyrovae.datasets.load("mnist", split="train").data.reshape(-1, 784).numpy())
    encoder = stax.serial(stax.Dense(HIDDEN), stax.Relu,
                          stax.FanOut(2), stax.parallel(stax.Dense(LATENT), stax.serial(stax.Dense(LATENT), stax.Exp)))
    decoder = stax.serial(stax.Dense(HIDDEN), stax.Relu, stax.Dense(784))

    def model(batch):
        decode = numpyro.module("decoder", decoder, (BATCH, LATENT))
        with numpyro.plate("data", BATCH):
            z = numpyro.sample("z", dist.Normal(0, 1).expand([LATENT]).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=decode(z)).to_event(1), obs=batch)

    def guide(batch):
        encode = numpyro.module("encoder", encoder, (BATCH, 784))
        loc, scale = encode(batch)
        with numpyro.plate("data", BATCH):
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    svi = SVI(model, guide, numpyro.optim.Adam(LR), TraceMeanField_ELBO())
    steps = data.shape[0] // BATCH
    state = svi.init(jax.random.PRNGKey(0), jnp.zeros((BATCH, 784)))

    @jax.jit
    def epoch_fn(state, key):
        order = jax.random.permutation(key, data.shape[0])

        def body(i, carry):
            loss_sum, state, key = carry
            key, draw = jax.random.split(key)
            index = lax.dynamic_slice_in_dim(order, i * BATCH, BATCH)
            batch = jax.random.bernoulli(draw, data[index]).astype(jnp.float32)
            state, loss = svi.update(state, batch)
            return loss_sum + loss, state, key

        return lax.fori_loop(0, steps, body, (0.0, state, key))

    seconds = []
    for epoch in range(epochs):
        epoch_gate()
        start = time.perf_counter()
        loss, state, _ = epoch_fn(state, jax.random.PRNGKey(epoch + 1))
        float(np.asarray(loss))
        seconds.append(time.perf_counter() - start)
    return seconds, {}


def run_pythae(epochs):
    import tempfile

    import torch
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    import pyrovae

    sys.path.insert(0, str(Path(__file__).parent))
    from common import pythae_networks

    data = pyrovae.datasets.load("mnist", split="train").data
    from pythae.data.datasets import BaseDataset

    binary = BaseDataset(torch.bernoulli(data, generator=torch.Generator().manual_seed(0)), torch.zeros(len(data)))
    torch.manual_seed(0)
    encoder, decoder = pythae_networks(HIDDEN, LATENT)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=encoder, decoder=decoder)
    seconds = []

    class Timer:  # pythae's callbacks see each epoch's end
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

        def on_epoch_begin(self, *args, **kwargs):
            epoch_gate()
            self.started = time.perf_counter()

        def on_epoch_end(self, *args, **kwargs):
            seconds.append(time.perf_counter() - self.started)

    from pythae.trainers.training_callbacks import TrainingCallback

    class EpochTimer(Timer, TrainingCallback):
        pass

    with tempfile.TemporaryDirectory() as out:
        config = BaseTrainerConfig(output_dir=out, num_epochs=epochs, learning_rate=LR, per_device_train_batch_size=BATCH,
                                   per_device_eval_batch_size=BATCH, no_cuda=True, steps_saving=None,
                                   optimizer_cls="Adam")
        BaseTrainer(model, train_dataset=binary, training_config=config, callbacks=[EpochTimer()]).train()
    return seconds, {}


def child(name, epochs):
    import torch

    torch.set_num_threads(int(os.environ.get("PEERS_THREADS", os.cpu_count())))
    if name == "pyrovae":
        return run_pyrovae(epochs, "on")
    if name == "pyrovae-defaults":
        return run_pyrovae(epochs, "defaults")
    if name == "pyrovae-defaults-cold":  # a user's first run on the machine: an empty user cache
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="peers-cold-cache-")
        os.environ["XDG_CACHE_HOME"] = folder
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        try:
            return run_pyrovae(epochs, "defaults")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if name == "pyrovae-bf16":
        return run_pyrovae(epochs, "bf16")
    if name == "pyrovae-eager":
        return run_pyrovae(epochs, "off")
    if name == "torch-eager":
        return run_torch(epochs, False)
    if name == "torch-compiled":
        return run_torch(epochs, True)
    if name == "numpyro":
        return run_numpyro(epochs)
    return run_pythae(epochs)


def available(name):
    module = {"numpyro": "numpyro", "pythae": "pythae"}.get(name)
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None and (module != "numpyro" or importlib.util.find_spec("jax"))


def versions():
    import importlib.metadata as metadata
    import platform

    sys.path.insert(0, str(Path(__file__).parent))
    from common import processor

    out = {"python": platform.python_version(), "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
           "processor": processor()}  # Intel or AMD: the figures differ by processor (issue #46)
    for package in ("torch", "pyro-ppl", "pyrovae", "numpyro", "jax", "jaxlib", "pythae"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_separately(name, epochs):
    """One child process, alone on the machine: its result, or None where it failed."""
    result = subprocess.run([sys.executable, __file__, "--child", name, "--epochs", str(epochs)],
                            capture_output=True, text=True)
    return _result(name, result.returncode, result.stdout, result.stderr)


def _result(name, returncode, stdout, stderr):
    line = [row for row in stdout.splitlines() if row.startswith("RESULT ")]
    if returncode or not line:
        print(f"{name}: failed\n{stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(line[-1][7:])


def run_lockstep(names, epochs):
    """One child process for each name, all alive at once, taking turns epoch by epoch: every
    child starts (imports, data) and waits; then each round lets one child at a time run one epoch,
    the order of the round rotating, so that what the machine does over a few seconds (another
    tenant taking a core, a slower stretch) falls on every implementation's same epoch alike. A
    child's end (its library's teardown, freeing its memory) waits too, until every epoch is
    over: ending beside another child's last epoch, it slowed that epoch by 2.4-2.8 s.
    Returns ``{name: result or None}``."""
    import tempfile

    children = {}
    for name in names:
        log = tempfile.TemporaryFile("w+")
        process = subprocess.Popen([sys.executable, __file__, "--child", name, "--epochs", str(epochs), "--lockstep"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        children[name] = (process, log, [])

    def until_waiting(name):
        """Reads the child's output until it waits (True) or ends (False)."""
        process, _, lines = children[name]
        for line in process.stdout:
            if line.strip() == "WAIT":
                return True
            lines.append(line)
        return False

    waiting = {name: until_waiting(name) for name in names}  # all started before any epoch
    for epoch in range(epochs):
        turn = names[epoch % len(names):] + names[:epoch % len(names)]
        for name in turn:
            if waiting[name]:
                process = children[name][0]
                process.stdin.write("go\n")
                process.stdin.flush()
                waiting[name] = until_waiting(name)
    results = {}
    for name in names:  # every epoch is over: let them all end
        if waiting[name]:
            children[name][0].stdin.write("go\n")
            children[name][0].stdin.flush()
    for name, (process, log, lines) in children.items():
        lines.extend(process.stdout)
        process.stdin.close()
        process.wait()
        log.seek(0)
        results[name] = _result(name, process.returncode, "".join(lines), log.read())
        log.close()
    return results


def paired_ratios(runs, name, peer, key="seconds"):
    """The ratio of ``name``'s epoch (its ``key``: ``"seconds"``, or pyrovae's ``"train_seconds"``,
    the epoch without its ELBO report) to ``peer``'s same epoch of the same repeat, for the steady
    epochs (the second on) of every repeat where both ran: in lockstep the two ran back to back."""
    theirs_by_repeat = {run["repeat"]: run for run in runs.get(peer, [])}
    return [mine / theirs for run in runs.get(name, []) if run["repeat"] in theirs_by_repeat
            for mine, theirs in zip(run.get(key, [])[1:], theirs_by_repeat[run["repeat"]]["seconds"][1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", help="comma-separated implementations")
    parser.add_argument("--defaults", action="store_true", help="pyrovae as a plain fit call runs it (no compile or "
                        "steps flags) beside the tuned pyrovae and NumPyro: --only pyrovae-defaults,pyrovae,numpyro")
    parser.add_argument("--lockstep", action="store_true", help="all implementations of a repeat alive at once, "
                        "taking turns epoch by epoch (on with --defaults), instead of one whole run after another")
    parser.add_argument("--unpaired", action="store_true", help="each process alone on the machine, one after "
                        "another, their order alternating by repeat (with --defaults too, which is otherwise in "
                        "lockstep): what a user running one program sees; medians and lower quartiles")
    parser.add_argument("--out", help="the results file (default: results-peers[-defaults|-unpaired]-cpu.json); name "
                        "one per processor to keep each machine's record")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        global LOCKSTEP
        LOCKSTEP = args.lockstep
        seconds, extra = child(args.child, args.epochs)
        print("RESULT " + json.dumps({"seconds": seconds, **extra}), flush=True)
        epoch_gate()  # in lockstep, this process's teardown waits until no other process is timing an epoch
        return
    names = args.only.split(",") if args.only else (["pyrovae-defaults", "pyrovae", "numpyro"] if args.defaults
                                                     else IMPLEMENTATIONS)
    missing = [n for n in names if not available(n)]
    for name in missing:
        print(f"{name}: skipped, not installed (pip install -e '.[bench]')", file=sys.stderr)
    names = [n for n in names if n not in missing]
    lockstep = (args.lockstep or args.defaults) and not args.unpaired
    runs = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]  # interleave: no implementation always first
        results = run_lockstep(order, args.epochs) if lockstep else {
            name: run_separately(name, args.epochs) for name in order}
        for name in order:
            if results[name] is None:
                continue
            runs[name].append({"repeat": repeat, **results[name]})
            print(f"{name} (repeat {repeat + 1}): {[round(s, 2) for s in runs[name][-1]['seconds']]}", flush=True)
    table = {}
    for name, measured in runs.items():
        if not measured:
            continue
        steady = [s for run in measured for s in run["seconds"][1:]] or [run["seconds"][0] for run in measured]
        whole_runs = [sum(run["seconds"]) for run in measured]
        table[name] = {"first_epoch": statistics.median(run["seconds"][0] for run in measured),
                       "epoch": statistics.median(steady), "epoch_min": min(steady), "epoch_max": max(steady),
                       "epoch_lower_quartile": statistics.quantiles(steady, n=4)[0] if len(steady) > 1 else steady[0],
                       "compile_seconds": measured[0].get("compile_seconds"),
                       "compile_seconds_each": [run.get("compile_seconds") for run in measured],
                       "whole_run": statistics.median(whole_runs), "whole_run_min": min(whole_runs),
                       "whole_run_max": max(whole_runs)}
    peers = [name for name in table if not name.startswith("pyrovae")]
    fastest_peer = min((table[name]["epoch"] for name in peers), default=None)
    fastest_run = min((table[name]["whole_run"] for name in peers), default=None)
    print("\n| implementation | first epoch (s) | epoch (s), median [min, max] | ratio to the fastest peer "
          "| whole run (s), median [min, max] | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in sorted(table.items(), key=lambda item: item[1]["epoch"]):
        row["ratio_to_fastest_peer"] = ratio = row["epoch"] / fastest_peer if fastest_peer else float("nan")
        row["whole_run_ratio"] = run_ratio = row["whole_run"] / fastest_run if fastest_run else float("nan")
        print(f"| {name} | {row['first_epoch']:.2f} | {row['epoch']:.2f} [{row['epoch_min']:.2f}, {row['epoch_max']:.2f}] "
              f"| {ratio:.2f} | {row['whole_run']:.1f} [{row['whole_run_min']:.1f}, {row['whole_run_max']:.1f}] "
              f"| {run_ratio:.2f} |")
    fastest_peer_name = min(peers, key=lambda name: table[name]["epoch"], default=None)
    if lockstep and fastest_peer_name:
        print(f"\nEpoch by epoch against {fastest_peer_name} (the same epoch of the same repeat, run back to back): "
              "median [min, max] of the ratios")
        for name in table:
            for key, label, what in (("seconds", "paired_ratio", "epoch"),
                                     ("train_seconds", "paired_train_ratio", "epoch without its ELBO report")):
                ratios = paired_ratios(runs, name, fastest_peer_name, key) if name != fastest_peer_name else []
                if ratios:
                    table[name][label] = statistics.median(ratios)
                    table[name][label + "_min"], table[name][label + "_max"] = min(ratios), max(ratios)
                    print(f"  {name}, {what}: {statistics.median(ratios):.3f} [{min(ratios):.2f}, {max(ratios):.2f}] "
                          f"over {len(ratios)} epochs")
    if not lockstep and fastest_peer_name:
        quartile = table[fastest_peer_name]["epoch_lower_quartile"]
        print(f"\nUnpaired against {fastest_peer_name}: ratio of medians, ratio of lower quartiles")
        for name, row in table.items():
            if name != fastest_peer_name:
                row["unpaired_lower_quartile_ratio"] = row["epoch_lower_quartile"] / quartile
                print(f"  {name}: {row['ratio_to_fastest_peer']:.3f}, {row['unpaired_lower_quartile_ratio']:.3f}")
    results_file = Path(args.out) if args.out else DEFAULTS_RESULTS if args.defaults and lockstep else (
        UNPAIRED_RESULTS if args.defaults else RESULTS)
    results_file.write_text(json.dumps(
        {"machine": versions(), "epochs": args.epochs, "repeats": args.repeats, "lockstep": lockstep,
         "table": table, "runs": runs, "time": time.ctime()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
