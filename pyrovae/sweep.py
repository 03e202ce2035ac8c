"""Sweeps over the declarative space with Optuna: which prior, likelihood, guide and learning rate
fit the data best, judged by the held-out log-likelihood.

A space is a run config (the TOML of ``pyrovae train --config``) with a search in place of a value:

==============================================  ===========================================================
in the space                                    the trial's value
==============================================  ===========================================================
``lr = {log = [1e-4, 3e-3]}``                   a float, log-uniform (``trial.suggest_float(log=True)``)
``beta = {uniform = [0.5, 2.0]}``               a float, uniform
``latent_dim = {int = [2, 20]}``                an integer (``{int = [a, b], log = true}`` log-uniform)
``optimizer = ["adam", "adamax"]``              one of the list (a list of lists for a list option:
                                                ``hidden = [[400], [500, 500]]``)
``prior = {kind = ["normal", "vamp"]}``         a list inside a prior, likelihood or guide table: one of it
``x = {choices = [...]}``                       one of the list, said explicitly
==============================================  ===========================================================

plus an optional ``[sweep]`` table (``trials``, ``num_samples``, ``eval_examples``, ``metric``)
that the command's flags override. Each trial is a normal run folder (``OUT/trial-0007``), trained
with the per-epoch validation ELBO reported to Optuna's pruner (the median rule: a trial whose
value falls below the median of the others at the same epoch stops, its folder kept), and judged
at the end by the importance-sampled log p(x) of the held-out (validation) examples; the share of
examples with Pareto k above 0.7 is recorded beside it.

The study lives in a database (SQLite by default, any SQLAlchemy URL), so several processes or
machines run one sweep: the same command started N times. Each running trial beats a heartbeat
into the database; a trial whose heartbeat stops (its process killed) is marked failed once the
beat is older than the grace period and enqueued again with the same parameters (Optuna's
``RetryFailedTrialCallback``), and the retry continues the killed trial's run folder from its last
checkpoint. So a sweep killed at any moment is continued by the same command, and nothing finished
is lost.
"""

import fcntl
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from . import config as cfg
from .extras import require
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .priors import PRIORS
from .run_folder import RunFolder, atomic_write_text
from .runs import evaluate_run, load_train_valid, train_run
from .train.callbacks import Callback

__all__ = ["SWEEP_FILE", "SearchSpace", "SweepWarning", "run_sweep", "load_sweep", "is_sweep_folder",
           "require_optuna"]

SWEEP_FILE = "sweep.json"  # in the sweep's folder: where its study lives, and its space
LOCAL_STORAGE = "sweep.db"  # the default storage, a SQLite file in the sweep's folder
SWEEP_DEFAULTS = {"trials": 20, "num_samples": 1000, "eval_examples": 1000, "metric": "valid_elbo"}
SEARCH_KEYS = ("log", "uniform", "int", "choices")
REGISTRIES = {"prior": PRIORS, "likelihood": LIKELIHOODS, "guide": GUIDES}
PROBABILITY_LIKELIHOODS = ("bernoulli", "logistic256")  # the rest give densities


def require_optuna():
    return require("optuna", "sweep", "a sweep (it runs on Optuna)")


def _is_search(value) -> bool:
    return isinstance(value, dict) and len(value) >= 1 and set(value) <= set(SEARCH_KEYS) and (
        "choices" in value or any(k in value for k in ("log", "uniform", "int")))


class SearchSpace:
    """A space file read once: the fixed config, the searched options by name
    (``"train.lr"``, ``"model.prior.kind"``) with their searches, and the ``[sweep]`` table."""

    def __init__(self, table: Dict[str, Any]):
        table = dict(table)
        self.options = {**SWEEP_DEFAULTS, **table.pop("sweep", {})}
        unknown = set(self.options) - set(SWEEP_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} in [sweep]; known keys: {sorted(SWEEP_DEFAULTS)}")
        self.searches: Dict[str, Any] = {}
        self.fixed = self._split(table)
        if not self.searches:
            raise ValueError("the space searches nothing: give a value as a list of choices or a range "
                             "(lr = {log = [1e-4, 3e-3]}, prior = {kind = [\"normal\", \"vamp\"]})")
        self._check_comparable()
        # every choice must make a valid config: checked once, here, not in trial 7
        for name, search in self.searches.items():
            for value in self._extremes(name, search):
                config = cfg.validate(self.assign(self.fixed, {name: value}))
                for key, registry in REGISTRIES.items():
                    if config["model"][key].get("kind") not in ("auto", "custom"):
                        registry[config["model"][key]["kind"]]  # an unknown name: its registry's ValueError

    def _split(self, table):
        fixed = {}
        for section, values in table.items():
            if section not in cfg.SECTIONS:
                raise ValueError(f"unknown config section [{section}]{cfg.nearest(section, cfg.SECTIONS)}; sections "
                                 f"are {sorted(cfg.SECTIONS)} and [sweep]")
            if not isinstance(values, dict):
                raise ValueError(f"[{section}] must be a table; got {values!r}")
            known = {f.name: f for f in cfg.fields(cfg.SECTIONS[section])}
            fixed[section] = {}
            for key, value in values.items():
                if key not in known:
                    raise ValueError(f"unknown key {key!r} in [{section}]{cfg.nearest(key, known)}")
                is_list_option = cfg._expected_type(known[key].type) is list
                is_table_option = cfg._expected_type(known[key].type) is dict
                name = f"{section}.{key}"
                if _is_search(value):
                    self.searches[name] = self._checked(name, value)
                elif isinstance(value, list) and (not is_list_option or (value and all(isinstance(v, list)
                                                                                       for v in value))):
                    self.searches[name] = self._checked(name, {"choices": value})
                elif is_table_option and isinstance(value, dict):
                    inner = {}
                    for arg, arg_value in value.items():
                        if isinstance(arg_value, list) or _is_search(arg_value):
                            search = arg_value if _is_search(arg_value) else {"choices": arg_value}
                            self.searches[f"{name}.{arg}"] = self._checked(f"{name}.{arg}", search)
                        else:
                            inner[arg] = arg_value
                    fixed[section][key] = inner
                else:
                    fixed[section][key] = value
        return fixed

    def _check_comparable(self):
        """Trials are ranked by held-out log p(x), which ranks only numbers of one kind on the same
        data: a probability (a Bernoulli's of binarized pixels, a discretized logistic's of 8-bit
        ones) and a density (a Gaussian's of grey values) do not measure each other."""
        search = self.searches.get("model.likelihood.kind")
        if search is None or "choices" not in search:
            return
        binarize = self.fixed.get("data", {}).get("binarize", "auto")
        footing = {}
        for kind in search["choices"]:
            data = binarize if binarize != "auto" else ("dynamic" if kind == "bernoulli" else "none")
            number = "probability" if kind in PROBABILITY_LIKELIHOODS else "density"
            footing.setdefault((number, data), []).append(kind)
        if len(footing) > 1:
            said = "; ".join(f"{', '.join(kinds)}: a {number} of {'binarized' if data != 'none' else 'unbinarized'} "
                             f"data" for (number, data), kinds in footing.items())
            raise ValueError(
                f"likelihood choices {search['choices']} give log p(x) on different footings ({said}), so their held-out "
                "log-likelihoods do not rank each other: search likelihoods of one kind on the same data (densities of "
                "grey values: gaussian, laplace, continuous_bernoulli with binarize = \"none\")")

    @staticmethod
    def _checked(name, search):
        if "choices" in search:
            if not isinstance(search["choices"], list) or not search["choices"]:
                raise ValueError(f"{name}: choices must be a non-empty list; got {search['choices']!r}")
            return {"choices": list(search["choices"])}
        kind = next(k for k in ("int", "uniform", "log") if k in search and isinstance(search[k], list))
        bounds = search[kind]
        if len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) \
                or not bounds[0] < bounds[1]:
            raise ValueError(f"{name}: {kind} = [low, high] with low < high; got {bounds!r}")
        if (kind == "log" or search.get("log") is True) and bounds[0] <= 0:
            raise ValueError(f"{name}: a log-uniform range needs low > 0; got {bounds!r}")
        if kind == "int" and not all(isinstance(b, int) for b in bounds):
            raise ValueError(f"{name}: int = [low, high] takes integers; got {bounds!r}")
        return {"kind": kind, "low": bounds[0], "high": bounds[1], "log": kind == "log" or search.get("log") is True}

    @staticmethod
    def _extremes(name, search):
        return search["choices"] if "choices" in search else [search["low"], search["high"]]

    @staticmethod
    def assign(fixed, values):
        """The config ``fixed`` with each ``"section.key[.arg]"`` of ``values`` set."""
        config = json.loads(json.dumps(fixed))
        for name, value in values.items():
            parts = name.split(".")
            table = config.setdefault(parts[0], {})
            if len(parts) == 2:
                table[parts[1]] = value
            else:
                table.setdefault(parts[1], {})[parts[2]] = value
        return config

    def suggest(self, trial) -> Dict[str, Any]:
        """The trial's value of each searched option (Optuna's suggestions, choices given as their
        JSON text where they are not scalars)."""
        values = {}
        for name, search in self.searches.items():
            if "choices" in search:
                choices = [c if isinstance(c, (str, int, float, bool)) or c is None else json.dumps(c)
                           for c in search["choices"]]
                picked = trial.suggest_categorical(name, choices)
                values[name] = search["choices"][choices.index(picked)]
            elif search["kind"] == "int":
                values[name] = trial.suggest_int(name, search["low"], search["high"], log=search["log"])
            else:
                values[name] = trial.suggest_float(name, float(search["low"]), float(search["high"]), log=search["log"])
        return values


class _ReportToTrial(Callback):
    """Reports each epoch's ``metric`` (the validation ELBO) to the trial and stops the run (after
    the epoch's checkpoint) where the pruner says so."""

    def __init__(self, trial, metric):
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_epoch_end(self, trainer, row):
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), int(row["epoch"]))
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def _retry_callback(optuna):
    """Optuna's callback that enqueues a trial whose heartbeat went stale again (its name since
    Optuna 4.9; ``RetryFailedTrialCallback`` before)."""
    return getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback


def _storage(optuna, url, heartbeat):
    retry = _retry_callback(optuna)(max_retry=3)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    argument = "heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback") \
        else "failed_trial_callback"
    return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                                      **{argument: retry})


def _open_study(optuna, out, storage, study_name, heartbeat, seed, attempts=5):
    """The study, made or joined. Workers started together would race to create the database's
    tables (Alembic's first migration): on this machine they take turns under a lock file in the
    sweep's folder, and a worker elsewhere that loses the race retries."""
    with open(out / ".sweep.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for attempt in range(attempts):
                try:
                    return optuna.create_study(
                        study_name=study_name, storage=_storage(optuna, storage, heartbeat), direction="maximize",
                        load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
                        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
                except Exception:  # noqa: BLE001 (SQLAlchemy's and Alembic's errors of a concurrent creation)
                    if attempt == attempts - 1:
                        raise
                    time.sleep(1.0 + attempt)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_sweep_folder(path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def load_sweep(path):
    """(the study, the sweep's record) of a sweep folder."""
    optuna = require_optuna()
    path = Path(path)
    if not is_sweep_folder(path):
        raise FileNotFoundError(f"{str(path)!r} is not a sweep folder (no {SWEEP_FILE})")
    record = json.loads((path / SWEEP_FILE).read_text())
    if record["storage"] == LOCAL_STORAGE:
        record["storage"] = f"sqlite:///{(path / LOCAL_STORAGE).resolve()}"
    study = optuna.load_study(study_name=record["study_name"], storage=record["storage"])
    return study, record


class SweepWarning(UserWarning):
    """A sweep whose ranking may not mean what it seems."""


# Likelihoods whose density at a point of the data can grow without bound as the model sharpens:
# the continuous Bernoulli at exact 0s and 1s, a location-scale family whose scale is learned.
def _unbounded(kind, table):
    return kind == "continuous_bernoulli" or (kind in ("gaussian", "laplace")
                                              and str(table.get("scale", "")).startswith("learned"))


def _warn_of_unbounded_densities(space, x, atoms_share=0.05):
    """Warns where the likelihood choices include a density that is unbounded on data with atoms
    (many values exactly at 0 or 1, as 8-bit images have): there the held-out log p(x) grows
    with how sharply the model fits the atoms, and ranks that, not the fit."""
    search = space.searches.get("model.likelihood.kind")
    if search is None or "choices" not in search:
        return
    table = space.fixed.get("model", {}).get("likelihood", {})
    unbounded = [kind for kind in search["choices"] if _unbounded(kind, table)]
    if not unbounded or "bernoulli" in search["choices"]:
        return
    sample = x[:1000].float()
    share = float(((sample == 0) | (sample == 1)).float().mean())
    if share > atoms_share:
        warnings.warn(f"{100 * share:.0f}% of the training values are exactly 0 or 1, where the density of "
                      f"{', '.join(unbounded)} is unbounded: a trial's held-out log p(x) grows with how sharply it "
                      "fits those atoms, so these likelihoods rank first whatever their fit elsewhere; compare densities "
                      "on dequantized data, or leave them out of the search", SweepWarning, stacklevel=3)


def run_sweep(space_file, out, trials: Optional[int] = None, storage: Optional[str] = None,
              study_name: Optional[str] = None, num_samples: Optional[int] = None,
              eval_examples: Optional[int] = None, heartbeat: float = 10.0, seed: Optional[int] = None,
              progress: bool = False, log=print):
    """Runs trials of the sweep ``space_file`` into folder ``out`` until the study holds ``trials``
    finished (complete or pruned) ones, with other processes running the same command beside it
    (see the module docstring); returns the study."""
    optuna = require_optuna()
    with warnings.catch_warnings():  # heartbeats and retries are marked experimental in Optuna: said once, here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _run_sweep(optuna, space_file, out, trials, storage, study_name, num_samples, eval_examples, heartbeat,
                          seed, progress, log)


def _run_sweep(optuna, space_file, out, trials, storage, study_name, num_samples, eval_examples, heartbeat, seed,
               progress, log):
    space = SearchSpace(cfg.load_toml(space_file))
    options = space.options
    trials = int(trials if trials is not None else options["trials"])
    num_samples = int(num_samples if num_samples is not None else options["num_samples"])
    eval_examples = int(eval_examples if eval_examples is not None else options["eval_examples"])
    if trials < 1 or num_samples < 1 or eval_examples < 1:
        raise ValueError("--trials, --num-samples and --eval-examples must be >= 1")
    out = Path(out)
    recorded_storage = storage or LOCAL_STORAGE  # the default: found beside sweep.json wherever the folder moves
    storage = storage or f"sqlite:///{(out / LOCAL_STORAGE).resolve()}"
    study_name = study_name or out.resolve().name
    fixed = cfg.validate(space.fixed)
    train, valid = load_train_valid(fixed)  # once: a missing data set fails here, before any trial
    if "valid_fraction" not in space.fixed.get("data", {}) and "data.valid_fraction" not in space.searches:
        if valid is None:  # choose on held-out training data, never on the test set
            space.fixed.setdefault("data", {})["valid_fraction"] = 0.1
    _warn_of_unbounded_densities(space, train.data)
    metric = options["metric"]
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(optuna, out, storage, study_name, heartbeat, seed)
    record = {"study_name": study_name, "storage": recorded_storage, "space": str(Path(space_file).resolve()),
              "searches": space.searches, "metric": metric, "num_samples": num_samples,
              "eval_examples": eval_examples}
    atomic_write_text(out / SWEEP_FILE, json.dumps(record, indent=2) + "\n")

    def objective(trial):
        values = space.suggest(trial)
        config = cfg.validate(space.assign(space.fixed, values))
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        number = _retry_callback(optuna).retried_trial_number(frozen)
        run_dir = out / f"trial-{trial.number if number is None else number:04d}"
        trial.set_user_attr("run_dir", run_dir.name)
        resume = bool(RunFolder(run_dir).checkpoint_generations())
        report = _ReportToTrial(trial, metric)
        log(f"trial {trial.number}: {values}" + (f" (again: trial {number}'s folder, resumed)" if resume else ""))
        train_run(config, run_dir, resume=resume, progress=progress, callbacks=[report])
        if report.pruned:
            epochs = len(RunFolder(run_dir).read_metrics())
            log(f"trial {trial.number}: pruned at epoch {epochs} (its {metric} below the median of the others')")
            raise optuna.TrialPruned(f"pruned at epoch {epochs}")
        split = "valid" if load_train_valid(config)[1] is not None else "test"
        evaluation = evaluate_run(run_dir, num_samples=num_samples, split=split, limit=eval_examples,
                                  progress=progress)
        diagnostics = evaluation["importance_diagnostics"]
        trial.set_user_attr("split", split)
        trial.set_user_attr("elbo", evaluation["elbo"])
        trial.set_user_attr("log_likelihood_stderr", evaluation["log_likelihood_stderr"])
        trial.set_user_attr("pareto_k_above_0.7_share", diagnostics["pareto_k_above_0.7_share"])
        log(f"trial {trial.number}: held-out log p(x) {evaluation['log_likelihood']:.3f} "
            f"(k > 0.7 for {diagnostics['pareto_k_above_0.7_share']:.0%})")
        return evaluation["log_likelihood"]

    states = optuna.trial.TrialState
    while True:
        optuna.storages.fail_stale_trials(study)  # a killed process's trial: failed, and enqueued again
        count = {state: len(study.get_trials(deepcopy=False, states=(state,)))
                 for state in (states.COMPLETE, states.PRUNED, states.RUNNING, states.WAITING)}
        if count[states.WAITING] or count[states.COMPLETE] + count[states.PRUNED] + count[states.RUNNING] < trials:
            study.optimize(objective, n_trials=1, catch=(ValueError, FloatingPointError))  # a waiting retry first
        elif count[states.RUNNING]:
            time.sleep(heartbeat)  # another worker's trial, or a killed one whose heartbeat is not stale yet
        else:
            break
    return study


def trials_table(study):
    """The finished trials as rows (number, state, value, params, user attrs), best first."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        complete = trial.state.name == "COMPLETE"
        steps = sorted(trial.intermediate_values)
        rows.append({"number": trial.number, "state": trial.state.name,
                     # a pruned trial's value is its last per-epoch report (an ELBO), not a log p(x)
                     "value": trial.value if complete else None,
                     "last_epoch": steps[-1] if steps else None,
                     "last_reported": trial.intermediate_values[steps[-1]] if steps else None,
                     "params": dict(trial.params), **{k: v for k, v in trial.user_attrs.items()},
                     "seconds": (trial.duration.total_seconds() if trial.duration is not None else None)})
    return sorted(rows, key=lambda r: (r["value"] is None, -(r["value"] or 0.0)))

