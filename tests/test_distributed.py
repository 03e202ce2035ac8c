"""Two CPU processes with gloo: one model, the same as one process on the same global batches."""

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

import pyrovae
from pyrovae import distributed
from pyrovae.estimate import distributed as distributed_estimate


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data(poison=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=g)
    if poison:
        x[70, 3] = float("nan")
    return x


def make_vae():
    torch.manual_seed(0)
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,), likelihood={"kind": "gaussian", "scale": 0.5})
    with torch.no_grad():
        # sigma(x) ~ 1e-4: the reparameterized noise is negligible, so ranks drawing their own
        # noise and one process drawing its own must still reach the same parameters
        vae.encoder.log_scale.weight.zero_()
        vae.encoder.log_scale.bias.fill_(-9.0)
    return vae


def _worker(rank, world_size, port, out, task):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank), PYROVAE_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    try:
        if task == "train":
            vae = make_vae()
            history = pyrovae.fit(vae, data(), epochs=2, batch_size=32, lr=1e-2, progress=False, device="cpu")
            torch.save({"state": vae.state_dict(), "history": history}, os.path.join(out, f"rank{rank}.pt"))
        elif task == "bad-shard":
            vae = make_vae()
            pyrovae.fit(vae, data(poison=rank == 1), epochs=1, batch_size=32, progress=False, device="cpu")
        elif task == "evaluate":
            vae = make_vae()
            context = distributed.process_context("cpu")
            ll, se = distributed_estimate.log_likelihood(context, vae, data()[:50], num_samples=64, block_size=16, batch_size=16, seed=3)
            torch.save({"ll": ll, "se": se}, os.path.join(out, f"rank{rank}.pt"))
    except Exception as error:  # the parent reads what each rank said
        with open(os.path.join(out, f"rank{rank}.error"), "w") as file:
            file.write(f"{type(error).__name__}: {error}")
    finally:
        if torch.distributed.is_initialized():
            try:  # neither rank tears gloo down while the other still talks to it
                torch.distributed.barrier()
            finally:
                torch.distributed.destroy_process_group()


def spawn(tmp_path, task, world_size=2):
    mp.spawn(_worker, args=(world_size, free_port(), str(tmp_path), task), nprocs=world_size, join=True)


def test_two_gloo_processes_train_one_model_equal_to_one_process(tmp_path):
    spawn(tmp_path, "train")
    assert not list(tmp_path.glob("*.error")), [p.read_text() for p in tmp_path.glob("*.error")]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for a, b in zip(ranks[0]["state"].values(), ranks[1]["state"].values()):
        assert torch.equal(a, b)  # DDP keeps the ranks identical
    single = make_vae()
    history = pyrovae.fit(single, data(), epochs=2, batch_size=32, lr=1e-2, progress=False, device="cpu")
    for name, value in single.state_dict().items():
        assert torch.allclose(ranks[0]["state"][name], value, atol=2e-4, rtol=1e-4), name
    # the reduced metrics are the global ones
    assert ranks[0]["history"][-1]["world_size"] == 2
    assert ranks[0]["history"][-1]["train_objective"] == pytest.approx(history[-1]["train_objective"], rel=1e-3)
    assert ranks[0]["history"][-1]["train_kl"] == pytest.approx(history[-1]["train_kl"], rel=1e-2)


def test_a_bad_shard_stops_every_rank_with_its_error(tmp_path):
    start = time.perf_counter()
    spawn(tmp_path, "bad-shard")
    assert time.perf_counter() - start < 60
    errors = {p.name: p.read_text() for p in tmp_path.glob("*.error")}
    assert set(errors) == {"rank0.error", "rank1.error"}
    assert "NaN" in errors["rank1.error"]
    assert "rank 1 failed" in errors["rank0.error"] and "NaN" in errors["rank0.error"]


def test_distributed_evaluation_equals_single_process(tmp_path):
    spawn(tmp_path, "evaluate")
    assert not list(tmp_path.glob("*.error")), [p.read_text() for p in tmp_path.glob("*.error")]
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single, single_se = distributed_estimate.log_likelihood(distributed.Context(0, 1, torch.device("cpu")), make_vae(),
                                                   data()[:50], num_samples=64, block_size=16, batch_size=16, seed=3)
    whole = pyrovae.log_likelihood(make_vae(), data()[:50], num_samples=64, batch_size=16, seed=3)
    for result in results:
        assert torch.allclose(result["ll"], single) and torch.allclose(result["se"], single_se)
    assert torch.allclose(whole, single)


def test_tensorboard_event_files_are_readable(tmp_path, binary_npy):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pyrovae.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", str(binary_npy), "--epochs", "2", "--hidden", "8", "--out", str(out),
                 "--tensorboard", "--no-progress", "--no-plots"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/train_elbo", "train/train_kl", "train/train_reconstruction", "optim/lr", "optim/grad_norm"):
        assert tag in tags["scalars"], tags["scalars"]
        assert len(events.Scalars(tag)) == 2
    assert {"reconstructions", "manifold"} <= set(tags["images"])


def test_lightning_module_trains_the_same_vae(tmp_path):
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from pyrovae.lightning import VAEModule

    x = data()
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,), likelihood="gaussian")
    before = float(pyrovae.elbo(vae, x, num_particles=10, seed=0).mean())
    module = VAEModule(vae, loss="trace", lr=1e-2)
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, DataLoader(TensorDataset(x), batch_size=32), DataLoader(TensorDataset(x), batch_size=64))
    after = float(pyrovae.elbo(vae, x, num_particles=10, seed=0).mean())
    assert after > before + 1
    assert "val_elbo" in trainer.callback_metrics and "train_objective" in trainer.callback_metrics
