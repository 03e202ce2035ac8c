"""Experiment trackers: a run's config, per-epoch numbers, figures and evaluation, written by
``--tracker mlflow`` / ``--tracker wandb`` and read back with the trackers' own readers (MLflow's
client; the records of W&B's offline run file, parsed with W&B's own protobuf schema)."""

import json
import struct
import sys
from pathlib import Path

import pytest

from pyrovae import config as cfg
from pyrovae import trackers
from pyrovae.cli import main
from pyrovae.extras import MissingExtraError


def _train(binary_npy, out, *tracker_flags):
    return main(["train", "--dataset", str(binary_npy), "--latent-dim", "2", "--hidden", "16", "--epochs", "3",
                 "--out", str(out), "--no-progress", *tracker_flags])


def test_mlflow_holds_the_config_the_curves_the_figures_and_the_evaluation(binary_npy, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder
    out = tmp_path / "runs" / "first"
    assert _train(binary_npy, out, "--tracker", "mlflow") == 0
    ids = json.loads((out / trackers.TRACKERS_FILE).read_text())["mlflow"]
    assert ids["tracking_uri"] == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"  # beside the run folder
    client = mlflow.tracking.MlflowClient(tracking_uri=ids["tracking_uri"])
    run = client.get_run(ids["run_id"])
    assert run.data.params["model.latent_dim"] == "2" and run.data.params["model.hidden"] == "[16]"
    assert run.data.tags["pyrovae.run_dir"] == str(out.resolve())
    curve = client.get_metric_history(ids["run_id"], "train_objective")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m.step for m in curve] == [1, 2, 3]
    assert [m.value for m in curve] == pytest.approx([row["train_objective"] for row in metrics])
    artifacts = {a.path for a in client.list_artifacts(ids["run_id"])}
    assert {"config.toml", "metrics.jsonl", "manifold.png"} <= artifacts
    assert (tmp_path / "runs" / "mlflow-artifacts").is_dir()  # beside the database, not under the working folder
    assert main(["evaluate", str(out), "--num-samples", "20", "--no-progress"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    run = client.get_run(ids["run_id"])
    assert run.data.metrics["evaluation.log_likelihood"] == pytest.approx(evaluation["log_likelihood"])
    assert "evaluation.json" in {a.path for a in client.list_artifacts(ids["run_id"])}
    assert not (tmp_path / "mlruns").exists()


def _wandb_records(path):
    """The records of a W&B offline run file: a 7-byte header, then LevelDB log blocks of 32 KiB
    holding ``wandb.proto`` Records (the format ``wandb sync`` reads)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    position, block, records, pending = 7, 32768, [], b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:  # the zero padding at a block's end
            position += left
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_the_config_the_curves_and_the_files(binary_npy, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline by default
    out = tmp_path / "run"
    assert _train(binary_npy, out, "--tracker", "wandb") == 0
    files = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = _wandb_records(files[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    run = records[kinds.index("run")].run
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    model = config["model"].get("value", config["model"])  # wrapped in {"value": ...} by some W&B versions
    assert model["latent_dim"] == 2
    logged = [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
              for r in records if r.WhichOneof("record_type") == "history"]
    assert [row["epoch"] for row in logged] == [1, 2, 3]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["train_objective"] for row in logged] == pytest.approx([row["train_objective"] for row in metrics])
    artifact = next(r.artifact for r in records if r.WhichOneof("record_type") == "artifact")
    assert {"config.toml", "metrics.jsonl", "manifold.png"} <= {entry.path for entry in artifact.manifest.contents}


def test_an_absent_tracker_package_names_its_extra_and_an_unknown_tracker_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    config = cfg.validate({"logging": {"trackers": ["mlflow"]}})
    with pytest.raises(MissingExtraError, match=r"pip install 'pyrovae\[mlflow\]'"):
        trackers.make_trackers(config, tmp_path)
    with pytest.raises(ValueError, match="unknown tracker 'mlfow'; choose from \\['mlflow', 'wandb'\\] \\(did you mean"):
        cfg.validate({"logging": {"trackers": ["mlfow"]}})
