"""The compiled training step: the same numbers as the eager step (loss, parameters after N steps)
for every loss and KL schedule that takes the fast path; one graph per run (no recompilation per
epoch, per KL weight or for the last short batch); eager, with the reason, everywhere else."""

import warnings

import numpy as np
import pyro
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import pyrovae

DATA = (torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def train(mode, **options):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    history = pyrovae.fit(vae, DATA, epochs=3, batch_size=64, progress=False, device="cpu", compile=mode, **options)
    return history, torch.cat([p.detach().flatten() for p in vae.parameters()])


@pytest.mark.parametrize("options", [
    {"loss": "meanfield"},
    {"loss": "trace", "beta": 0.5},
    {"loss": "iwae", "num_particles": 3, "estimator": "stl"},
    {"loss": "meanfield", "warmup_epochs": 2.0},
], ids=["meanfield", "trace-beta", "iwae-stl", "warmup"])
def test_the_compiled_step_follows_the_eager_one(options):
    eager_history, eager_parameters = train("off", **options)
    torch._dynamo.reset()
    counters.clear()
    compiled_history, compiled_parameters = train("on", **options)
    # 300 examples in batches of 64: four full batches a call, from the second epoch (the first's
    # first step is validated eagerly, and its next three are off the calls' grid); the last (44) eager
    assert counters["stats"]["unique_graphs"] == 1, "one graph for the whole run"
    # reported once, in the epoch that compiled (the second; the first with a KL schedule's one step a call)
    compiled_rows = [row for row in compiled_history if "compile_seconds" in row]
    assert len(compiled_rows) == 1 and compiled_rows[0]["compile_seconds"] > 0
    for eager, compiled in zip(eager_history, compiled_history):
        assert compiled["train_objective"] == pytest.approx(eager["train_objective"], rel=1e-5, abs=1e-4)
        assert compiled["kl_weight"] == pytest.approx(eager["kl_weight"])
    assert torch.allclose(compiled_parameters, eager_parameters, rtol=1e-4, atol=1e-5)


class TransposedLinear(torch.nn.Module):
    """A linear layer whose weight is stored (in, out) and used transposed, as a tied decoder's is:
    its gradient, g^T x transposed, comes out of the compiled graph as a transposed view."""

    def __init__(self, fan_in, fan_out):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(fan_in, fan_out) / fan_in ** 0.5)
        self.bias = torch.nn.Parameter(torch.zeros(fan_out))

    def forward(self, h):
        return torch.nn.functional.linear(h, self.weight.t(), self.bias)


def test_a_parameter_used_transposed_trains_compiled_as_eager():
    """The fused Adam kernel reads a gradient in its parameter's layout: the compiled step hands it
    each gradient so, as eager backward does, and the two runs end with the same parameters."""
    def run(mode):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
        vae.decoder.net[-1] = TransposedLinear(16, 64)
        history = pyrovae.fit(vae, DATA, epochs=3, batch_size=64, progress=False, device="cpu", compile=mode,
                              loss="meanfield")
        return history, torch.cat([p.detach().flatten() for p in vae.parameters()])

    eager_history, eager_parameters = run("off")
    compiled_history, compiled_parameters = run("on")
    assert any("compile_seconds" in row for row in compiled_history), "the step was compiled"
    for eager, compiled in zip(eager_history, compiled_history):
        assert compiled["train_objective"] == pytest.approx(eager["train_objective"], rel=1e-5, abs=1e-4)
    assert torch.allclose(compiled_parameters, eager_parameters, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options, reason", [
    ({"loss": "iwae", "num_particles": 3, "estimator": "dreg"}, "DReG"),
    ({"loss": "trace", "free_bits": 0.1}, "free bits"),
    ({"fast_path": False}, "trace path"),
])
def test_what_the_compiler_does_not_take_trains_eager_and_says_why(options, reason):
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    with pytest.warns(RuntimeWarning, match=reason):
        pyrovae.fit(vae, DATA, epochs=1, batch_size=64, progress=False, device="cpu", compile="on", **options)


def test_auto_compiles_only_runs_long_enough_to_pay_for_it():
    trainer = pyrovae.train.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)),
                                    pyrovae.config.train_options({"epochs": 2, "device": "cpu"}))
    trainer.setup(DATA)
    assert trainer.compiled_loss is None and "too few" in trainer.compile_note
    trainer = pyrovae.train.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)),
                                    pyrovae.config.train_options({"epochs": 2000, "batch_size": 16, "device": "cpu"}))
    trainer.setup(DATA)
    assert trainer.compiled is not None and trainer.optimizer.defaults["fused"]


@pytest.mark.parametrize("options, calls", [
    ({"epochs": 200}, 4),  # four full batches an epoch: a call of at most four
    ({"epochs": 200, "batch_size": 16}, 8),  # sixteen: eight a call
    ({"epochs": 200, "batch_size": 14}, 9),  # nineteen: nine a call (one off the grid), where eight would leave three
    ({"epochs": 5000, "warmup_epochs": 10.0}, 1),  # a KL weight that changes every step
    ({"epochs": 200, "steps_per_call": 3}, 3),
])
def test_steps_per_call_by_default_is_eight_to_twelve_or_an_epochs_full_batches(options, calls):
    trainer = pyrovae.train.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)),
                                    pyrovae.config.train_options({"batch_size": 64, "device": "cpu", "compile": "on",
                                                                  **options}))
    trainer.setup(DATA[:256 + 10])
    assert trainer.compiled_step is not None and trainer.steps_per_call == calls


@pytest.mark.parametrize("full_steps, calls", [
    (1, 1), (5, 5), (8, 8),  # an epoch of at most eight full batches: one call takes them all
    (468, 9),  # MNIST in batches of 128: 468 = 9 x 52, where eight leave four batches off the grid
    (390, 10),  # static MNIST's 50000: 390 = 10 x 39
    (16, 8), (24, 8),  # eight divides: the fewest steps a call among the equals
    (19, 9),  # none divides: 19 = 2 x 9 + 1 leaves one batch off the grid, eight would leave three
    (23, 11),  # 23 = 2 x 11 + 1
    (10000, 8),
])
def test_auto_steps_per_call_leaves_fewest_full_batches_off_the_grid(full_steps, calls):
    assert pyrovae.fast.compiled.auto_steps_per_call(full_steps) == calls


def test_a_compiler_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(*args, **kwargs):
        def fails(*a, **k):
            raise RuntimeError("no C++ compiler found")
        return fails

    eager_history, eager_parameters = train("off")
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile is unavailable here"):
        history, parameters = train("on")
    assert torch.allclose(parameters, eager_parameters, rtol=1e-4, atol=1e-5)
    assert "compile_seconds" not in history[0]


def test_no_compile_flag_and_boolean_keyword(tmp_path):
    from pyrovae.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--dataset", "mnist", "--no-compile", "--out", str(tmp_path / "r")])
    assert config_from_args(args)["train"]["compile"] == "off"
    assert pyrovae.config.train_options({"compile": False})["compile"] == "off"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # off is quiet
        train(False)


def test_the_compiled_estimator_gives_the_eager_estimate():
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    eager = pyrovae.log_likelihood(vae, DATA[:50], num_samples=64, seed=0, compile="off")
    torch._dynamo.reset()
    counters.clear()
    compiled = pyrovae.log_likelihood(vae, DATA[:50], num_samples=64, seed=0, compile="on")
    assert torch.allclose(compiled, eager, atol=1e-4)
    # the fast path whole in one graph (not Pyro's trace path, whose plates break the graph)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


GREY = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(1))
TEST = torch.rand(2500, 1, 8, 8, generator=torch.Generator().manual_seed(2))  # two compiled metric batches and a short one


@pytest.mark.parametrize("options", [
    {"loss": "meanfield", "grad_clip": 0.5, "lr_schedule": "multistep", "lr_milestones": [1], "lr_gamma": 0.5},
    # two steps a call: the epoch's first four steps as two calls (the run's first eager, its second
    # off the grid, eager too), the short fifth eager
    {"loss": "meanfield", "grad_clip": 0.5, "lr_schedule": "multistep", "lr_milestones": [1], "lr_gamma": 0.5,
     "steps_per_call": 2},
    {"loss": "trace", "warmup_epochs": 2.0},
], ids=["clip-schedule", "clip-schedule-2-steps-a-call", "trace-warmup"])
def test_the_whole_compiled_step_binarizes_clips_and_follows_the_schedule_as_eager_does(options):
    """Grey data: the compiled graph draws the dynamic binarization itself, from torch's generator
    in the eager step's order, so the runs see the same images; clipping and the learning-rate
    schedule act inside the graph as clip_grad_norm_ and the scheduler act eagerly."""
    def run(mode):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
        trainer = pyrovae.train.Trainer(vae, pyrovae.config.train_options(
            {"epochs": 3, "batch_size": 64, "device": "cpu", "compile": mode, **options}))
        history = trainer.fit(GREY, test=TEST)
        return trainer, history, torch.cat([p.detach().flatten() for p in vae.parameters()])

    _, eager_history, eager_parameters = run("off")
    torch._dynamo.reset()
    counters.clear()
    trainer, compiled_history, compiled_parameters = run("on")
    assert trainer.compiled_step is not None and trainer.compiled_step.compile_seconds > 0
    # the step's graph and the per-epoch metrics' (steps off the calls' grid run eager)
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"]
    assert trainer.compiled_terms is not None and not trainer.compiled_terms.failed
    for eager, compiled in zip(eager_history, compiled_history):
        assert compiled["train_objective"] == pytest.approx(eager["train_objective"], rel=1e-5, abs=1e-4)
        for key in ("train_elbo", "test_elbo", "test_kl", "test_reconstruction"):
            assert compiled[key] == pytest.approx(eager[key], rel=1e-5, abs=1e-4), key
        assert compiled["lr"] == eager["lr"]
        assert compiled["grad_norm"] == pytest.approx(eager["grad_norm"], rel=1e-4)
    assert torch.allclose(compiled_parameters, eager_parameters, rtol=1e-4, atol=1e-5)
    state = trainer.optimizer.state_dict()["state"]
    assert all(float(entry["step"]) == 3 * 5 for entry in state.values())  # 5 steps an epoch, each counted once


def test_adam_update_is_torch_adams_fused_step_and_skips_a_non_finite_step():
    from pyrovae.fast.compiled import adam_update_

    torch.manual_seed(0)
    reference = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    ours = [p.detach().clone() for p in reference]
    optimizer = torch.optim.Adam(reference, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, fused=True)
    exp_avgs, exp_avg_sqs = [torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ours]
    steps = [torch.zeros(()) for _ in ours]
    for step in range(4):
        grads = [torch.randn_like(p) for p in ours]
        found_inf = torch.tensor(1.0 if step == 2 else 0.0)  # step 3 skipped: nothing may change
        before = [p.clone() for p in ours]
        adam_update_(ours, grads, exp_avgs, exp_avg_sqs, steps, torch.tensor(3e-3, dtype=torch.float64), found_inf,
                     0.8, 0.99, 1e-6)
        if step == 2:
            assert all(torch.equal(a, b) for a, b in zip(before, ours)) and float(steps[0]) == 2
            continue
        for p, g in zip(reference, grads):
            p.grad = g
        optimizer.step()
        for a, b in zip(reference, ours):
            assert torch.allclose(a.detach(), b, rtol=0, atol=1e-7)
    assert [float(s) for s in steps] == [float(optimizer.state[p]["step"]) for p in reference] == [3.0, 3.0]


def test_a_non_finite_loss_in_the_compiled_step_keeps_the_last_good_state():
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    kept = {}

    class CorruptTheData(pyrovae.train.Callback):
        """After step 2 (compiled), an infinite pixel where step 3's batch gathers it."""

        def on_step_end(self, trainer, step, loss):
            if step == 1:
                assert trainer.compiled_step.compile_seconds is not None
                kept["parameters"] = [p.detach().clone() for p in trainer.vae.parameters()]
                kept["optimizer"] = trainer.optimizer
                kept["state"] = {(id(p), k): v.clone() for p, entry in trainer.optimizer.state.items()
                                 for k, v in entry.items()}
                trainer.train_x[:] = float("inf")

    with pytest.raises(pyrovae.train.TrainingDiverged, match="the loss became"):
        pyrovae.fit(vae, DATA.clone(), epochs=1, batch_size=64, progress=False, device="cpu", compile="on",
                    steps_per_call=1, callbacks=[CorruptTheData()])  # a copy: the callback writes into the training tensor
    assert all(torch.equal(a, b) for a, b in zip(kept["parameters"], vae.parameters()))
    state = {(id(p), k): v for p, entry in kept["optimizer"].state.items() for k, v in entry.items()}
    assert state.keys() == kept["state"].keys()
    assert all(torch.equal(kept["state"][key], value) for key, value in state.items())


@pytest.mark.parametrize("steps_per_call", [1, 2])
def test_a_compiled_run_resumed_from_its_checkpoint_ends_where_the_uninterrupted_run_ends(tmp_path, steps_per_call):
    """The whole step updates the optimizer's own state tensors, so the checkpoint holds what the
    next step reads, and a resumed run (its optimizer's tensors new) continues exactly."""
    def run(epochs, run_dir, resume=False):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
        history = pyrovae.fit(vae, GREY, epochs=epochs, batch_size=64, progress=False, device="cpu", compile="on",
                              run_dir=run_dir, resume=resume, lr_schedule="exponential", lr_gamma=0.5,
                              grad_clip=10.0, steps_per_call=steps_per_call)
        return vae, history

    whole, whole_history = run(3, tmp_path / "whole")
    run(1, tmp_path / "resumed")
    resumed, resumed_history = run(3, tmp_path / "resumed", resume=True)  # a new process's VAE and optimizer
    assert [r["train_objective"] for r in resumed_history] == [r["train_objective"] for r in whole_history]
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_a_non_finite_loss_inside_a_call_of_several_steps_keeps_the_state_before_it():
    """Two steps a call, the second one's batch corrupted: the graph applies the first update and
    skips the second, so the run stops where the one-step-a-call run stops, at the same step."""
    from pyrovae.train.trainer import stream_seed

    def run(steps_per_call):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
        trainer = pyrovae.train.Trainer(vae, pyrovae.config.train_options(
            {"epochs": 3, "batch_size": 64, "device": "cpu", "compile": "on", "grad_clip": 10.0,
             "steps_per_call": steps_per_call}), callbacks=[CorruptTheSecondBatch()])
        with pytest.raises(pyrovae.train.TrainingDiverged, match="at epoch 2, step 2;"):
            trainer.fit(DATA.clone())  # the callback writes into the training tensor
        return trainer

    class CorruptTheSecondBatch(pyrovae.train.Callback):
        """In epoch 2, the images of its second batch made infinite before the epoch starts."""

        def on_epoch_start(self, trainer):
            if trainer.epoch == 1:
                order = torch.randperm(len(trainer.train_x), generator=torch.Generator().manual_seed(
                    stream_seed(trainer.options["seed"], trainer.epoch)))
                trainer.train_x[order[64:128]] = float("inf")

    one, two = run(1), run(2)
    assert two.steps_per_call == 2 and two.step == one.step == 1
    for a, b in zip(one.vae.parameters(), two.vae.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # every parameter's Adam count: the five steps of epoch 1 and the first of epoch 2, not the skipped one
    assert all(float(entry["step"]) == 6 for entry in two.optimizer.state.values())


def test_a_checkpoint_inside_a_call_of_several_steps_records_the_calls_end_and_resumes_exactly(tmp_path):
    """checkpoint_every=3 with two steps a call: step 3 ends inside the call of steps 3-4, which
    reports both after it, so the checkpoint holds the state after step 4, and says so; resumed,
    the run ends bit for bit where the uninterrupted run ends."""
    from pyrovae.run_folder import read_checkpoint

    class Crash(Exception):
        pass

    class CrashAfterTheCheckpoint(pyrovae.train.Callback):
        def on_step_end(self, trainer, step, loss):
            if trainer.epoch == 0 and step == 3:  # the checkpoint wrote at step 2's report (step + 1 = 3)
                raise Crash

    def run(run_dir, resume=False, callbacks=()):
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
        pyrovae.fit(vae, GREY, epochs=2, batch_size=64, progress=False, device="cpu", compile="on", run_dir=run_dir,
                    resume=resume, grad_clip=10.0, steps_per_call=2, checkpoint_every=3, callbacks=callbacks)
        return vae

    whole = run(tmp_path / "whole")
    with pytest.raises(Crash):
        run(tmp_path / "resumed", callbacks=[CrashAfterTheCheckpoint()])
    state = read_checkpoint(tmp_path / "resumed")
    assert (state["epoch"], state["step"]) == (0, 4)
    resumed = run(tmp_path / "resumed", resume=True)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_calls_keep_to_their_grid_and_steps_off_it_run_eager(monkeypatch):
    """Seven full batches and a short one an epoch, three steps a call: the run's first step and
    each epoch's short batch run eager; steps 0 and 3 start calls of three, and steps off the
    grid (6, and the first epoch's 1 and 2, after its eager first step) run eager too: one graph,
    compiled in the first epoch."""
    from pyrovae.fast.compiled import CompiledStep

    calls = []
    original = CompiledStep.__call__

    def recording(self, data, indices):
        calls.append((trainer.epoch, trainer.step, len(indices)))
        return original(self, data, indices)

    monkeypatch.setattr(CompiledStep, "__call__", recording)
    torch.manual_seed(0)
    trainer = pyrovae.train.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)), pyrovae.config.train_options(
        {"epochs": 2, "batch_size": 16, "device": "cpu", "compile": "on", "steps_per_call": 3}))
    history = trainer.fit(DATA[:7 * 16 + 5])
    assert calls == [(0, 3, 3), (1, 0, 3), (1, 3, 3)]
    assert trainer.compiled_step.compiled_calls == {3}
    # a run long enough to pay for it takes the steps off the grid in a one-step graph instead
    monkeypatch.setattr(pyrovae.train.trainer, "ONE_STEP_GRAPH_MIN_STEPS", 16)
    calls.clear()
    torch.manual_seed(0)
    trainer = pyrovae.train.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)), pyrovae.config.train_options(
        {"epochs": 2, "batch_size": 16, "device": "cpu", "compile": "on", "steps_per_call": 3}))
    trainer.fit(DATA[:7 * 16 + 5])
    assert calls == [(0, 1, 1), (0, 2, 1), (0, 3, 3), (0, 6, 1), (1, 0, 3), (1, 3, 3), (1, 6, 1)]
    assert trainer.compiled_step.compiled_calls == {1, 3}
    assert history[0]["compile_seconds"] > 0 and "compile_seconds" not in history[1]
    # every step counted once by Adam: eight an epoch
    assert all(float(entry["step"]) == 16 for entry in trainer.optimizer.state.values())


def test_a_recompiled_step_still_traces_its_gradient_into_one_graph():
    """A guard that fails after the first compilation (here a batch of another size) makes the
    compiler trace again: the new graph must hold the gradient too (no graph break at
    torch.autograd.grad), and the call updates the state as a step does."""
    torch._dynamo.reset()  # the earlier tests' graphs count against the compiler's recompile limit
    torch.manual_seed(0)
    trainer = pyrovae.train.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)), pyrovae.config.train_options(
        {"epochs": 1, "batch_size": 64, "device": "cpu", "compile": "on"}))
    trainer.fit(DATA)
    counters.clear()
    before = [p.detach().clone() for p in trainer.vae.parameters()]
    with pyro.validation_enabled(False):  # as fit trains
        losses, diverged, _ = trainer.compiled_step(trainer.train_x, torch.arange(32).view(1, 32))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert diverged is None and torch.isfinite(losses).all()
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.vae.parameters()))


def test_every_model_structure_has_its_own_recompilation_budget():
    """Dynamo counts recompilations per code object: runs whose steps shared one would, past its
    limit, train eagerly without a word. With the limit at 1, two models of different latent
    sizes in one process still compile a graph each, and a third run of the first shares its
    graph."""
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=1):
        for latent_dim in (2, 3, 2):
            torch.manual_seed(0)
            vae = pyrovae.VAE((1, 8, 8), latent_dim=latent_dim, hidden=(16,))
            history = pyrovae.fit(vae, DATA, epochs=2, batch_size=64, progress=False, device="cpu", compile="on",
                                  loss="meanfield")
            assert np.isfinite(history[-1]["train_elbo"])
    assert counters["stats"]["unique_graphs"] == 2


def test_the_compiled_graphs_are_ones_aotautograds_disk_cache_stores():
    """A warm run loads the step's and the report's graphs from AOTAutograd's disk cache instead
    of tracing them again (about half a warm compilation): nothing in them may make the cache
    bypass them (a ``torch.autograd.Function``'s ``autograd_function_apply``, a ``Tensor.split``)."""
    from torch._functorch import config as functorch_config

    if not functorch_config.enable_autograd_cache:
        pytest.skip("AOTAutograd's cache is off in this PyTorch")
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    pyrovae.fit(vae, DATA, epochs=2, batch_size=64, progress=False, device="cpu", compile="on", loss="meanfield")
    cache = counters["aot_autograd"]
    assert cache["autograd_cache_bypass"] == 0, dict(cache)
    assert cache["autograd_cache_hit"] + cache["autograd_cache_miss"] >= 1, dict(cache)


def test_the_adam_operator_passes_opcheck():
    """``pyrovae::adam_update_r1_``'s schema (which lists it mutates), fake kernel and dispatch, as
    torch.library.opcheck checks an operator that compiled graphs call."""
    from pyrovae.fast.compiled import _adam_operator

    operator = _adam_operator()[0]
    params = [torch.randn(4, 3), torch.randn(3)]
    args = (params, [torch.randn_like(p) for p in params], [torch.zeros_like(p) for p in params],
            [torch.zeros_like(p) for p in params], [torch.ones(()) for _ in params],
            torch.tensor(1e-3, dtype=torch.float64), torch.zeros(()), 0.9, 0.999, 1e-8)
    torch.library.opcheck(operator, args)
