"""Experiment trackers: a run logged where researchers look, beside its run folder (which stays the
record: the trackers get copies).

- **MLflow** (``pip install 'pyrovae[mlflow]'``): through ``MlflowClient`` (no global active run),
  by default into a SQLite database beside the run folder (``RUN/../mlflow.db``: the runs of one
  folder, a sweep's trials among them, in one database; no server), or ``[logging] mlflow_uri``.
- **Weights & Biases** (``pip install 'pyrovae[wandb]'``): in offline mode unless ``WANDB_MODE``
  says otherwise, the offline run under ``RUN/wandb`` (``wandb sync`` uploads it).

Each gets the resolved config as parameters (``model.prior.kind`` ...), every epoch's numbers as
metrics at that epoch, and at the end the figures, ``config.toml`` and ``metrics.jsonl`` as
artifacts, tagged with the run folder's path; ``pyrovae evaluate`` adds ``evaluation.json`` and its
numbers to the same tracker run (its id kept in the run folder's ``trackers.json``, so a resumed
run and a later evaluation continue it).
"""

import json
import os
import time
from pathlib import Path
from typing import Dict, List

from .atomic_files import atomic_write_text
from .extras import require
from .train.callbacks import Callback

__all__ = ["TRACKERS", "TRACKERS_FILE", "Tracker", "MLflowTracker", "WandbTracker", "make_trackers",
           "log_evaluation"]

TRACKERS_FILE = "trackers.json"
ARTIFACT_SUFFIXES = (".png", ".toml", ".jsonl", ".html")


def flatten(config, prefix="") -> Dict[str, str]:
    """``{"model": {"prior": {"kind": "vamp"}}}`` -> ``{"model.prior.kind": "vamp"}``, values as text."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif value is not None:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def _numbers(row) -> Dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "epoch" and v == v}


def _ids(run_dir) -> Dict:
    path = Path(run_dir) / TRACKERS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_id(run_dir, name, value):
    ids = _ids(run_dir)
    ids[name] = value
    atomic_write_text(Path(run_dir) / TRACKERS_FILE, json.dumps(ids, indent=2) + "\n")


class Tracker(Callback):
    """A tracker as a training callback: ``start`` (once the run folder exists), per-epoch metrics,
    ``finish`` with the run folder's files."""

    name = "tracker"

    def __init__(self, run_dir, config):
        self.run_dir, self.config = Path(run_dir).resolve(), config

    def artifacts(self, evaluation=None) -> List[Path]:
        """The run folder's figures, config and metrics, and ``evaluation.json`` where an evaluation
        is being logged."""
        found = sorted(p for p in self.run_dir.iterdir() if p.is_file() and p.suffix in ARTIFACT_SUFFIXES)
        return found + ([self.run_dir / "evaluation.json"] if evaluation is not None else [])


class MLflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir, config, uri=None, experiment="pyrovae"):
        super().__init__(run_dir, config)
        self.uri = uri or f"sqlite:///{self.run_dir.parent / 'mlflow.db'}"
        # artifacts beside the default database too (MLflow's own default is ./mlruns under the
        # current directory, wherever the command runs)
        self.artifact_location = None if uri else (self.run_dir.parent / "mlflow-artifacts").as_uri()
        self.client = require("mlflow.tracking", "mlflow", "the MLflow tracker").MlflowClient(tracking_uri=self.uri)
        self.experiment = experiment
        self.run_id = None

    def start(self):
        if self.run_id is not None:
            return
        self.run_id = _ids(self.run_dir).get("mlflow", {}).get("run_id")
        if self.run_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(
                self.experiment, artifact_location=self.artifact_location)
            run = self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                         tags={"pyrovae.run_dir": str(self.run_dir)})
            self.run_id = run.info.run_id
            params = [require("mlflow.entities", "mlflow", "the MLflow tracker").Param(key, value[:6000])
                      for key, value in flatten(self.config).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
                self.client.log_batch(self.run_id, params=params[start:start + 100])
            _save_id(self.run_dir, "mlflow", {"run_id": self.run_id, "tracking_uri": self.uri})

    def on_fit_start(self, trainer):
        self.start()

    def on_epoch_end(self, trainer, row):
        self.start()
        step, now = int(row["epoch"]), int(time.time() * 1000)
        metric = require("mlflow.entities", "mlflow", "the MLflow tracker").Metric
        self.client.log_batch(self.run_id, metrics=[metric(key, value, now, step)
                                                    for key, value in _numbers(row).items()])

    def finish(self, evaluation=None):
        self.start()
        if evaluation is not None:
            for key, value in _numbers(flatten_numbers(evaluation)).items():
                self.client.log_metric(self.run_id, f"evaluation.{key}", value)
        for path in self.artifacts(evaluation):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id)


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run_dir, config, project="pyrovae"):
        super().__init__(run_dir, config)
        self.wandb = require("wandb", "wandb", "the Weights & Biases tracker")
        self.project, self.run = project, None

    def start(self):
        if self.run is not None:
            return
        run_id = _ids(self.run_dir).get("wandb", {}).get("run_id")
        self.run = self.wandb.init(project=self.project, dir=str(self.run_dir), name=self.run_dir.name,
                                   id=run_id, resume="allow" if run_id else None, config=self.config,
                                   mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new",
                                   tags=["pyrovae"], notes=str(self.run_dir))
        if run_id is None:
            _save_id(self.run_dir, "wandb", {"run_id": self.run.id, "project": self.project})

    def on_fit_start(self, trainer):
        self.start()

    def on_epoch_end(self, trainer, row):
        self.start()
        self.run.log({**_numbers(row), "epoch": int(row["epoch"])})

    def finish(self, evaluation=None):
        self.start()
        if evaluation is not None:
            self.run.summary.update({f"evaluation.{k}": v for k, v in _numbers(flatten_numbers(evaluation)).items()})
        artifact = self.wandb.Artifact(f"{self.run_dir.name}-files", type="run-folder")
        for path in self.artifacts(evaluation):
            if path.is_file():
                artifact.add_file(str(path))
        self.run.log_artifact(artifact)
        self.run.finish()
        self.run = None


def flatten_numbers(table, prefix="") -> Dict[str, float]:
    """The numbers of a nested table (``evaluation.json``), keyed ``bounds.elbo`` ..."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


TRACKERS = {"mlflow": MLflowTracker, "wandb": WandbTracker}


def make_trackers(config, run_dir) -> List[Tracker]:
    """The trackers ``[logging] trackers`` names, for run folder ``run_dir``."""
    logging = config["logging"]
    made = []
    for name in logging.get("trackers") or []:
        if name == "mlflow":
            made.append(MLflowTracker(run_dir, config, uri=logging.get("mlflow_uri")))
        elif name == "wandb":
            made.append(WandbTracker(run_dir, config, project=logging.get("wandb_project") or "pyrovae"))
        else:
            raise ValueError(f"unknown tracker {name!r}; choose from {sorted(TRACKERS)}")
    return made


def log_evaluation(config, run_dir, evaluation):
    """``evaluation.json``'s numbers and file added to the run's tracker runs (where it has any)."""
    for tracker in make_trackers(config, run_dir):
        tracker.finish(evaluation)
