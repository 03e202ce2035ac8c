"""Choices by what the machine is (issue #46): a kernel choice measured once, kept in the user's
cache under the processor, torch's version and the thread count, and measured again when any of
them changes; bf16 warned about with its measured figures where it is the slower; the compiled
steps' caches in the user's folder, and compile="auto" taking a shorter run where the step was
compiled on this machine before."""

import json
import os
import warnings

import pytest
import torch

import pyrovae
from pyrovae.fast import compile_cache, kernels, machine_choices, precision

LAYERS = ((784, 400), (400, 50), (50, 400), (400, 784))


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "pyrovae"


@pytest.fixture
def timed(monkeypatch):
    """The measurement replaced by given figures (seconds a call per candidate), counting calls."""
    calls = []

    def install(figures):
        def median_seconds(candidates):
            calls.append(sorted(candidates))
            return {name: figures[name] for name in candidates}

        monkeypatch.setattr(machine_choices, "_median_seconds", median_seconds)
        return calls

    return install


def test_a_choice_is_measured_once_and_read_from_the_users_cache(user_cache, timed, monkeypatch):
    monkeypatch.setattr(machine_choices, "onednn_available", lambda: True)
    calls = timed({"onednn": 2e-3, "aten": 3e-3})
    assert machine_choices.linear_kernel(LAYERS, 128) == "onednn"
    assert machine_choices.linear_kernel(LAYERS, 128) == "onednn"
    assert calls == [["aten", "onednn"]], "measured once"
    data = json.loads((user_cache / machine_choices.FILE_NAME).read_text())
    (key, entry), = data["machines"].items()
    assert entry["processor"] == machine_choices.processor_name() and entry["torch"] == torch.__version__
    assert entry["threads"] == torch.get_num_threads()
    (name, record), = entry["choices"].items()
    assert "784->400" in name and "batch 128" in name
    assert record["choice"] == "onednn" and record["onednn_ms"] == 2.0 and record["aten_ms"] == 3.0

    # other shapes are another choice; a near tie keeps PyTorch's own kernel
    calls.clear()
    timed({"onednn": 0.97e-3, "aten": 1e-3})
    assert machine_choices.linear_kernel(LAYERS, 64) == "aten"
    assert len(calls) == 1


@pytest.mark.parametrize("change", ["processor", "torch", "threads"])
def test_a_choice_is_made_again_on_another_processor_torch_or_thread_count(user_cache, timed, monkeypatch, change):
    monkeypatch.setattr(machine_choices, "onednn_available", lambda: True)
    calls = timed({"onednn": 2e-3, "aten": 3e-3})
    assert machine_choices.linear_kernel(LAYERS, 128) == "onednn"
    if change == "processor":
        monkeypatch.setattr(machine_choices, "processor_name", lambda: "AMD EPYC 9R14 96-Core Processor")
    elif change == "torch":
        monkeypatch.setattr(torch, "__version__", "99.0.0")
    else:
        monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    timed({"onednn": 3e-3, "aten": 2e-3})
    assert machine_choices.linear_kernel(LAYERS, 128) == "aten"
    assert len(calls) == 2
    machines = json.loads((user_cache / machine_choices.FILE_NAME).read_text())["machines"]
    assert len(machines) == 2, "both machines' choices kept"


def test_a_damaged_or_unwritable_cache_costs_a_measurement_and_nothing_else(user_cache, timed, monkeypatch):
    monkeypatch.setattr(machine_choices, "onednn_available", lambda: True)
    calls = timed({"onednn": 2e-3, "aten": 3e-3})
    user_cache.mkdir(parents=True)
    (user_cache / machine_choices.FILE_NAME).write_text("{not json")
    assert machine_choices.linear_kernel(LAYERS, 128) == "onednn"
    assert json.loads((user_cache / machine_choices.FILE_NAME).read_text())["format"] == machine_choices.FORMAT

    monkeypatch.setattr(machine_choices, "_write", lambda data: None)  # as a read-only home leaves it
    os.unlink(user_cache / machine_choices.FILE_NAME)
    assert machine_choices.linear_kernel(LAYERS, 128) == "onednn"
    assert machine_choices.linear_kernel(LAYERS, 128) == "onednn"
    assert len(calls) == 3


@pytest.mark.skipif(not kernels.available(), reason="this PyTorch build has no oneDNN")
def test_the_measurement_times_the_same_products_on_both_kernels(user_cache):
    """The two candidates compute the same three products (so the faster is the same work), and
    the real measurement records both times."""
    generator = torch.Generator().manual_seed(0)
    x, weight, bias, grad = (torch.randn(32, 20, generator=generator), torch.randn(12, 20, generator=generator),
                             torch.randn(12, generator=generator), torch.randn(32, 12, generator=generator))
    for onednn, aten in zip(kernels.linear_products("onednn", x, weight, bias, grad),
                            kernels.linear_products("aten", x, weight, bias, grad)):
        torch.testing.assert_close(onednn, aten, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown linear kernel 'mkl'"):
        kernels.linear_products("mkl", x, weight, bias, grad)
    choice = machine_choices.linear_kernel(((20, 12), (12, 20)), 32)
    record, = json.loads((user_cache / machine_choices.FILE_NAME).read_text())["machines"].popitem()[1][
        "choices"].values()
    assert choice == record["choice"] in ("onednn", "aten") and record["onednn_ms"] > 0 and record["aten_ms"] > 0


def test_the_compiled_step_takes_the_measured_kernel(user_cache, monkeypatch):
    monkeypatch.setattr(machine_choices, "onednn_available", lambda: True)
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    seen = {}
    for choice in ("aten", "onednn"):
        monkeypatch.setattr(pyrovae.fast.compiled, "linear_kernel", lambda layers, batch, choice=choice: (
            seen.setdefault(choice, (layers, batch)), choice)[1])
        trainer = pyrovae.train.Trainer(vae, pyrovae.config.train_options(
            {"epochs": 2, "device": "cpu", "compile": "on", "batch_size": 50}))
        trainer.setup(torch.rand(200, 1, 8, 8).round())
        assert trainer.compiled_step.linear_kernel == choice
        assert choice in trainer.compiled_step.structure, "graphs of the two kernels are not shared"
        assert (trainer.compiled_step.kernels._linear is not None) == (choice == "onednn" and kernels.available())
    assert seen["aten"] == (((64, 16), (16, 3), (16, 3), (3, 16), (16, 64)), 50)


def test_bf16_slower_than_float32_is_warned_about_with_the_figures(user_cache, timed, monkeypatch):
    calls = timed({"bf16": 6.5e-3, "fp32": 3.4e-3})
    with pytest.warns(precision.PrecisionWarning, match=r"6\.50 ms in bfloat16 against 3\.40 ms in float32"):
        timing = precision.warn_if_bf16_is_slower(LAYERS, 128, "cpu")
    assert timing["bf16_ms"] == 6.5 and len(calls) == 1
    with pytest.warns(precision.PrecisionWarning):
        precision.warn_if_bf16_is_slower(LAYERS, 128, "cpu")
    assert len(calls) == 1, "measured once a machine"
    timed({"bf16": 2.6e-3, "fp32": 3.4e-3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.warn_if_bf16_is_slower(LAYERS, 64, "cpu")  # faster: no warning
        assert precision.warn_if_bf16_is_slower(LAYERS, 64, "meta") is None  # not a CPU: nothing measured


def test_fit_in_bf16_warns_where_it_measures_slower(user_cache, timed, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: ("avx512_bf16",))
    timed({"bf16": 2e-3, "fp32": 1e-3})
    vae = pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,))
    with pytest.warns(precision.PrecisionWarning, match="slower than float32 on this processor"):
        trainer = pyrovae.train.Trainer(vae, pyrovae.config.train_options({"epochs": 1, "precision": "bf16"}))
        trainer.setup(torch.rand(100, 1, 8, 8).round())


def test_the_real_bf16_measurement_records_both_times(user_cache):
    timing = machine_choices.bf16_timing(((20, 12),), 16)
    assert timing["bf16_ms"] > 0 and timing["fp32_ms"] > 0 and "measured_at" in timing


def test_torch_compile_caches_go_to_the_users_folder_while_pyrovae_compiles(user_cache, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with compile_cache.kernels_in_user_cache():
        inside = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    assert inside == str(user_cache / "compiled") and (user_cache / "compiled").is_dir()
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ, "restored"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(user_cache.parent / "mine"))
    with compile_cache.kernels_in_user_cache():
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(user_cache.parent / "mine"), "the user's choice stands"


def test_a_compile_is_recorded_and_known_while_its_kernels_are_kept(user_cache, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    structure = ("VAE", "784-400-50", 9, (60000, 784), 128)
    assert not compile_cache.compiled_before(structure)
    compile_cache.record_compile(structure, 39.3)
    assert not compile_cache.compiled_before(structure), "no kernels in the folder yet"
    (user_cache / "compiled" / "fx").mkdir(parents=True)
    assert compile_cache.compiled_before(structure)
    compile_cache.record_compile(structure, 4.4)
    record = machine_choices.lookup(compile_cache.structure_name(structure))
    assert record["first_compile_seconds"] == 39.3 and record["last_compile_seconds"] == 4.4
    assert not compile_cache.compiled_before(structure[:-1] + (64,)), "another batch size is another graph"
    monkeypatch.setattr(machine_choices, "processor_name", lambda: "another processor")
    assert not compile_cache.compiled_before(structure), "another machine's compile"


def test_auto_compiles_a_shorter_run_where_the_step_compiled_here_before(user_cache, monkeypatch):
    """compile='auto': from AUTO_MIN_STEPS steps always; from AUTO_MIN_STEPS_CACHED where the
    same graph compiled on this machine before (its kernels cached); below that, never."""
    from pyrovae.fast.compiled import AUTO_MIN_STEPS, AUTO_MIN_STEPS_CACHED

    data = torch.rand(320, 1, 8, 8).round()  # ten full batches of 32 an epoch

    def trainer_for(steps):
        trainer = pyrovae.train.Trainer(pyrovae.VAE((1, 8, 8), latent_dim=3, hidden=(16,)), pyrovae.config.train_options(
            {"epochs": steps // 10, "batch_size": 32, "device": "cpu"}))
        trainer.setup(data)
        return trainer

    between = (AUTO_MIN_STEPS_CACHED + AUTO_MIN_STEPS) // 20 * 10
    first = trainer_for(between)
    assert first.compiled_step is None and first.compiled_terms is None
    assert "first compilation of this step on this machine" in first.compile_note
    long_run = trainer_for(AUTO_MIN_STEPS)
    assert long_run.compiled_step is not None and long_run.compile_note is None
    # as the long run's first epoch leaves it: the compile recorded, its kernels in the user's folder
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    compile_cache.record_compile(long_run._graph_key(), 30.0)
    (user_cache / "compiled" / "fxgraph").mkdir(parents=True)
    again = trainer_for(between)
    assert again.compiled_step is not None and again.compiled_terms is not None and again.compile_note is None
    assert "too few" in trainer_for(AUTO_MIN_STEPS_CACHED - 10).compile_note
