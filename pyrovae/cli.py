"""``pyrovae train | evaluate | plot | report``: flags override ``--config FILE.toml``."""

import argparse
import json
import sys
from dataclasses import fields

from . import config as cfg
from . import __version__, distributed, program_folder, runs, sweep, sweep_report
from .estimate import METHODS
from .run_folder import RunFolderLocked

__all__ = ["main", "build_parser", "config_from_args"]


def _int_list(text):
    text = text.strip()
    if text in ("", "none", "()"):
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated integers like 400 or 512,256 (or 'none'); got {text!r}") from None


def _dims(text):
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        dims = []
    if len(dims) != 2:
        raise argparse.ArgumentTypeError(f"--dims takes two latent indices like 0,1; got {text!r}")
    return dims


TRUST_HELP = ("UNSAFE: load a checkpoint that holds more than tensors and plain types (it can run code); "
              "only for a file you trust")


def build_parser():
    parser = argparse.ArgumentParser(prog="pyrovae", description="Variational autoencoders as Pyro models and guides.")
    parser.add_argument("--version", action="version", version=f"pyrovae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a VAE into a run folder", argument_default=None)
    train.add_argument("--config", help="a TOML file; flags override it")
    add_config_flags(train)
    train.add_argument("--no-plots", action="store_true", help="skip the figures at the end")
    train.add_argument("--out", required=True, help="the run folder")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)

    evaluate = sub.add_parser("evaluate", help="importance-sampled log-likelihood and checked bounds")
    evaluate.add_argument("run_dir", help="the run folder (with --program: the folder to write into)")
    evaluate.add_argument("--num-samples", type=int, default=1000)
    evaluate.add_argument("--split", default="test", choices=["test", "train", "valid"])
    evaluate.add_argument("--limit", type=int, help="only the first N examples")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--repeats", type=int, default=1, help="R independent estimates: their mean and sd")
    evaluate.add_argument("--checkpoint", default="auto", choices=["auto", "last", "best"],
                          help="best: best.pt, the epoch with the best validation ELBO (m2: accuracy); last: "
                          "checkpoint.pt; auto: best.pt for m2 where the run has one, else the last")
    evaluate.add_argument("--method", default="is", choices=list(METHODS),
                          help="; ".join(f"{name}: {method.help}" for name, method in METHODS.items()))
    evaluate.add_argument("--num-chains", type=int, default=16, help="ais, bdmc: chains per example")
    evaluate.add_argument("--num-steps", type=int, default=1000, help="ais, bdmc: intermediate distributions")
    evaluate.add_argument("--num-leapfrog", type=int, default=10, help="ais, bdmc: leapfrog steps per HMC move")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_program_flags(evaluate)

    plot = sub.add_parser("plot", help="draw figures into the run folder")
    plot.add_argument("run_dir", help="the run folder (with --program: the folder to write into)")
    plot.add_argument("--kind", default="all", help=f"one of {', '.join(runs.PLOT_KINDS)} (vae, hvae); completions "
                      "or classes (cvae); analogies, classes (m2); curves; all")
    plot.add_argument("--dims", type=_dims, help="two latent dimensions for the manifold, e.g. 0,1")
    plot.add_argument("--pca", action="store_true", help="manifold over the top two principal axes of the encodings")
    plot.add_argument("--n", type=int, default=20, help="manifold grid size")
    plot.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_program_flags(plot, pictures=True)

    sweep = sub.add_parser("sweep", help="search the config space with Optuna: trials judged by held-out log p(x)")
    sweep.add_argument("space", help="a config TOML with choices or ranges in place of values (docs: Sweeps)")
    sweep.add_argument("--out", required=True, help="the sweep's folder: a run folder per trial, sweep.json")
    sweep.add_argument("--trials", type=int, help="finished trials the study is to hold (default: [sweep] trials, 20)")
    sweep.add_argument("--storage", help="the study's database, any SQLAlchemy URL (default: sqlite:///OUT/sweep.db); "
                       "start the same command several times to run trials side by side")
    sweep.add_argument("--study-name", help="the study's name in the database (default: OUT's name)")
    sweep.add_argument("--num-samples", type=int, help="importance samples per held-out example (default 1000)")
    sweep.add_argument("--eval-examples", type=int, help="held-out examples each trial is judged on (default 1000)")
    sweep.add_argument("--heartbeat", type=float, default=10.0,
                       help="seconds between a running trial's heartbeats; a trial silent for twice this is taken "
                       "as killed, marked failed and run again")
    sweep.add_argument("--seed", type=int, help="the sampler's seed")
    sweep.add_argument("--no-progress", action="store_true")

    report = sub.add_parser("report", help="write a self-contained report.html (of a run folder or a sweep folder)")
    report.add_argument("run_dir", help="the run or sweep folder (with --program: the folder to write into)")
    report.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_program_flags(report, pictures=True)
    return parser


def _shape(text):
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"takes positive integers like 28,28 or 1,28,28; got {text!r}")
    return shape


def add_program_flags(parser, pictures=False):
    """The flags that evaluate or draw a user's own Pyro program instead of a run folder."""
    group = parser.add_argument_group("a user's own Pyro program (instead of a run folder)")
    group.add_argument("--program", metavar="FILE.py:NAME",
                       help="a class or factory in FILE.py whose object has model and guide methods")
    group.add_argument("--program-arg", action="append", metavar="KEY=VALUE", help="an argument of NAME, repeatable")
    group.add_argument("--weights", help="a state dict file for the program's parameters (read with weights_only=True)")
    group.add_argument("--dataset", default="mnist", help="the data set to evaluate or draw on (default mnist)")
    group.add_argument("--data-dir", help="where the data set's files are")
    group.add_argument("--binarize", default="none", choices=["none", "threshold", "dynamic"],
                       help="how the data are binarized for the program (dynamic: one fixed draw; default: as given)")
    if pictures:
        group.add_argument("--image-shape", type=_shape, help="how a flat observation is drawn, e.g. 28,28")
        group.add_argument("--latent-site", help="the latent site to draw, where the program has several")
        group.add_argument("--obs-site", help="the observed site to draw, where the program has several")
    else:
        group.add_argument("--data-plate", help="the plate over the examples, where the trace leaves it open")


def _program_options(args):
    return dict(program_args=cfg.parse_assignments(args.program_arg, "program"), weights=args.weights,
                dataset=args.dataset)


def _picture_options(args):
    return dict(binarize=args.binarize, data_dir=args.data_dir, image_shape=args.image_shape,
                latent_site=args.latent_site, obs_site=args.obs_site)


def _flag(f):
    return "--" + f.name.replace("_", "-")


def add_config_flags(parser):
    """One flag per option of the config schema (:mod:`pyrovae.config`), its help and choices
    taken from there; ``--prior``/``--likelihood``/``--guide`` name a kind, ``--prior-arg KEY=VALUE`` its
    arguments."""
    for section, cls in cfg.SECTIONS.items():
        group = parser.add_argument_group(f"[{section}]")
        for f in fields(cls):
            meta = f.metadata
            if not meta["flag"]:
                continue
            if f.name in ("prior", "likelihood", "guide"):
                group.add_argument(_flag(f), help=meta["help"])
                group.add_argument(_flag(f) + "-arg", action="append", metavar="KEY=VALUE",
                                   help=f"{f.name} argument, repeatable")
            elif cfg._expected_type(f.type) is list:
                group.add_argument(_flag(f), type=_int_list, help=meta["help"])
            elif f.type is bool:
                group.add_argument(_flag(f), action="store_true", default=None, help=meta["help"])
            else:
                kind = cfg._expected_type(f.type)
                group.add_argument(_flag(f), type=kind, choices=meta["choices"], help=meta["help"])
                if f.name == "wandb_project":
                    group.add_argument("--tracker", action="append", choices=cfg.TRACKER_NAMES,
                                       help=cfg.LoggingConfig.__dataclass_fields__["trackers"].metadata["help"])
                if f.name == "compile":
                    group.add_argument("--no-compile", dest="compile", action="store_const", const="off",
                                       help="train eager (the same as --compile off)")


def config_from_args(args):
    """The run config: the TOML file (or the run's own config when resuming), then the flags."""
    config = {}
    if args.config:
        config = cfg.load_toml(args.config)
    elif args.resume:
        config = runs.read_run_config(args.out)
    flags = {}
    for section, cls in cfg.SECTIONS.items():
        table = flags.setdefault(section, {})
        for f in fields(cls):
            if f.metadata["flag"] and f.name not in ("prior", "likelihood", "guide"):
                table[f.name] = getattr(args, f.name)
    flags["logging"]["plots"] = False if args.no_plots else None
    flags["logging"]["trackers"] = args.tracker
    for key in ("prior", "likelihood", "guide"):
        kind = getattr(args, key)
        extra = cfg.parse_assignments(getattr(args, f"{key}_arg"), key)
        if kind is not None:
            flags["model"][key] = {"kind": kind, **extra}
        elif extra:
            base = config.get("model", {}).get(key, cfg.default_config()["model"][key])
            flags["model"][key] = {**base, **extra}
    flags = {section: {k: v for k, v in table.items() if v is not None} for section, table in flags.items()}
    return cfg.validate(cfg.merge(config, flags))


def _print_evaluation(result):
    """Prints an evaluation (not its bounds table); 3 where the bound check failed."""
    if result is None:  # a torchrun rank other than 0: rank 0 prints and writes
        return 0
    shown = {k: v for k, v in result.items() if k != "bounds"}
    print(json.dumps(shown, indent=2))
    if result["bound_check"] != "ok":
        print("bound check VIOLATED:\n" + "\n".join(result["bounds"]["violations"]), file=sys.stderr)
        return 3
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            config = config_from_args(args)
            _, history = runs.train_run(config, args.out, resume=args.resume, progress=not args.no_progress,
                                        trust=args.trust_checkpoint)
            if distributed.process_context(config["train"]["device"]).is_main:
                print(json.dumps(history[-1]) if history else "no epoch trained: the run folder holds the untrained model")
                print(f"run folder: {args.out}")
        elif args.command == "evaluate" and args.program:
            result = program_folder.evaluate_program(
                args.run_dir, args.program, **_program_options(args), split=args.split, limit=args.limit,
                num_samples=args.num_samples, seed=args.seed, method=args.method, num_chains=args.num_chains,
                num_steps=args.num_steps, num_leapfrog=args.num_leapfrog, binarize=args.binarize,
                data_dir=args.data_dir, device=args.device, progress=not args.no_progress, repeats=args.repeats,
                data_plate=args.data_plate)
            return _print_evaluation(result)
        elif args.command == "evaluate":
            result = runs.evaluate_run(args.run_dir, args.num_samples, args.split, args.limit, args.device,
                                       progress=not args.no_progress, seed=args.seed, trust=args.trust_checkpoint,
                                       repeats=args.repeats, checkpoint=args.checkpoint, method=args.method,
                                       num_chains=args.num_chains, num_steps=args.num_steps,
                                       num_leapfrog=args.num_leapfrog)
            return _print_evaluation(result)
        elif args.command == "plot" and args.program:
            for path in program_folder.plot_program(args.run_dir, args.program, **_program_options(args),
                                                    **_picture_options(args), dims=args.dims, pca=args.pca, n=args.n,
                                                    kind=args.kind):
                print(path)
        elif args.command == "report" and args.program:
            print(program_folder.report_program(args.run_dir, args.program, **_program_options(args),
                                                **_picture_options(args)))
        elif args.command == "plot":
            for path in runs.plot_run(args.run_dir, args.kind, dims=args.dims, pca=args.pca, n=args.n,
                                      trust=args.trust_checkpoint):
                print(path)
        elif args.command == "sweep":
            study = sweep.run_sweep(args.space, args.out, trials=args.trials, storage=args.storage,
                                    study_name=args.study_name, num_samples=args.num_samples,
                                    eval_examples=args.eval_examples, heartbeat=args.heartbeat, seed=args.seed,
                                    progress=not args.no_progress)
            best = study.best_trial if any(t.value is not None for t in study.get_trials(deepcopy=False)) else None
            if best is not None:
                print(f"best: trial {best.number}, held-out log p(x) {best.value:.3f} nats, {best.params} "
                      f"({best.user_attrs.get('run_dir')})")
            print(f"sweep folder: {args.out}; pyrovae report {args.out}")
        elif args.command == "report" and sweep.is_sweep_folder(args.run_dir):
            print(sweep_report.report_sweep(args.run_dir))
        elif args.command == "report":
            print(runs.report_run(args.run_dir, trust=args.trust_checkpoint))
    except (ValueError, OSError, TypeError, FloatingPointError, RunFolderLocked, ImportError) as error:
        print(f"pyrovae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pyrovae {args.command}: interrupted" + ("; continue with --resume" if args.command == "train" else ""),
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
