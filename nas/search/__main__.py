"""``python -m nas.search``: platform-aware architecture search (MnasNet), resumable, parallel on Ray."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from nas.cli import retire, run
from nas.cluster import probe
from nas.errors import NasError
from nas.latency.options import add_calibration_option
from nas.latency.predict import resolve_target
from nas.search.controllers import CONTROLLERS, PPOSettings
from nas.search.evaluate import ProxySettings
from nas.search.evaluators import EVALUATORS, EvaluatorSettings
from nas.search.objectives import MODES, PRESETS, Objective
from nas.search.records import Status
from nas.search.runner import SearchConfig, default_out_dir, run_search
from nas.supernet.sampling import RULES
from nas.train.device import check_device, default_device
from nas.train.proxy import open_data
from search_spaces import SPACES

TARGETS = ("pixel-cpu", "host-cpu", "cuda")
DEFAULT_T_NETWORK = "mnasnet_a1"
_SUPERNET = EvaluatorSettings()

EPILOG = """\
examples:
  python -m nas.search --target pixel-cpu                        # small default search, a few minutes
  python -m nas.search --target pixel-cpu --controller nsga2 --trials 40 --out runs/front
  python -m nas.search --target host-cpu --data cifar10_jpg/train --steps 200 --train-resolution 32 --out runs/cifar
  python -m nas.search --controller tpe --storage postgresql://USER:PASSWORD@HOST/DB --out runs/tpe-a
  python -m nas.search --target pixel-cpu --space mobilenetv3-shared --evaluator supernet --controller evolution \
      --trials 200
  python -m nas.search --space mobilenetv3-shared --evaluator supernet --supernet runs/supernet --trials 500
  python -m nas.search --space mobilenetv3-shared --evaluator supernet --quick   # a dry run, about a minute

Rerunning a command with the same --out resumes it: finished trials are kept, open ones are
evaluated again, the controller continues from its saved state. --trials may grow on a resume;
other settings may not change. Outputs in --out: trials.csv/.parquet, best.json, pareto.csv,
pareto.png, references.csv, study.db (Optuna), controller.pkl, config.json (the run's id and settings),
and with --evaluator supernet (unless --supernet reuses one) supernet/, the supernet trained as the
run's first stage (a rerun finishes a half-trained one, then the search).
In a shared --storage, a run's study is named after the --out folder and belongs to that run
alone: a new run whose folder name is taken there is refused. Browse a study with
optuna-dashboard STORAGE_URL (parameters are the chosen options, user attributes the records).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nas.search", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to search")
    g.add_argument("--target", default="pixel-cpu", help=f"latency target: {' | '.join(TARGETS)} (default pixel-cpu)")
    add_calibration_option(g)
    g.add_argument("--space", default="mnasnet", help=f"search space: {' | '.join(SPACES)} (default mnasnet)")
    g.add_argument("--latency-target", type=float, metavar="MS",
                   help=f"T in the reward, in ms (default: {DEFAULT_T_NETWORK}'s predicted latency on the target "
                        "and calibration)")
    g.add_argument("--objective", help=f"{' | '.join(MODES)}: MnasNet's scalar reward, or accuracy and latency "
                                       "as two objectives (default: pareto for nsga2, reward otherwise)")
    g.add_argument("--reward", default="soft", help=f"reward preset: {' | '.join(PRESETS)} "
                                                    "(soft -0.07/-0.07, small w=-0.15, hard 0/-1; default soft)")
    g.add_argument("--alpha", type=float, help="exponent when latency <= T (overrides the preset)")
    g.add_argument("--beta", type=float, help="exponent when latency > T (overrides the preset)")
    g.add_argument("--latency-resolution", type=int, default=224, metavar="PX",
                   help="deployment resolution that latency, params and MAdds are counted at (default 224)")

    g = p.add_argument_group("how to search")
    g.add_argument("--controller", default="rl", help=f"{' | '.join(CONTROLLERS)} (default rl: RNN + PPO; "
                                                     "evolution: regularized evolution)")
    g.add_argument("--trials", type=int, default=12, help="architectures to evaluate in total (default 12)")
    g.add_argument("--seed", type=int, default=0, help="seed of the controller and the proxy training")
    g.add_argument("--population", type=int, default=4,
                   help="TPE random start-up trials / NSGA-II generation size / evolution population, "
                        "whose tournaments sample a quarter of it, at least 2 (default 4)")
    g.add_argument("--ppo-batch", type=int, default=4, help="rl: results per PPO update (default 4)")
    g.add_argument("--ppo-lr", type=float, default=0.01, help="rl: controller learning rate (default 0.01)")

    g = p.add_argument_group("how a candidate's accuracy is obtained")
    g.add_argument("--evaluator", default="train", metavar="|".join(EVALUATORS),
                   help="train: every candidate trained from scratch (the proxy training below); supernet: its "
                        "weights inherited from a weight-sharing supernet, BatchNorm recalibrated, scored on the "
                        "same held-out split (default train)")
    g.add_argument("--supernet", type=Path, metavar="DIR",
                   help="supernet: reuse this trained supernet (python -m nas.supernet train --out DIR) over the "
                        "same --space; children are scored on the data it was trained on (default: train one in "
                        "OUT/supernet on the proxy data, resolution, batch, rate and seed below)")
    g.add_argument("--supernet-epochs", type=int, metavar="N",
                   help=f"supernet: epochs of the supernet trained in the run (default {_SUPERNET.epochs})")
    g.add_argument("--supernet-rule", metavar="|".join(RULES),
                   help=f"supernet: children per training step, {' | '.join(RULES)} (default {_SUPERNET.rule})")

    g = p.add_argument_group("proxy training (the data and recipe of the supernet, too)")
    g.add_argument("--data", default="synthetic", help="synthetic (built in) | an ImageFolder or CIFAR-10 "
                                                       "python-batches directory")
    g.add_argument("--epochs", type=float, default=1.0, help="epochs of proxy training per candidate (default 1)")
    g.add_argument("--steps", type=int, help="SGD steps per candidate (replaces --epochs)")
    g.add_argument("--train-resolution", type=int, default=32, metavar="PX",
                   help="image size of the proxy training and scoring (default 32)")
    retire(g, "--resolution", "--train-resolution (the proxy training image size); latency is priced at "
                              "--latency-resolution")
    g.add_argument("--batch-size", type=int, default=64, help="proxy training batch size (default 64)")
    g.add_argument("--bn-batches", type=int, default=20,
                   help="training batches that re-estimate BatchNorm statistics after training (default 20)")
    g.add_argument("--lr", type=float, default=0.05, help="proxy training learning rate (default 0.05)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training split held out to score candidates (default 0.1)")
    g.add_argument("--device", default=default_device(),
                   help="proxy training device (default: cuda if available, else cpu)")

    g = p.add_argument_group("execution and outputs")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="trials evaluated in parallel on Ray (default: one per core); 0 = one at a time in this "
                        "process, without Ray")
    g.add_argument("--ray-address", help="an existing Ray cluster (nas must be installed on its nodes)")
    g.add_argument("--out", type=Path, help="run directory (default runs/<timestamp>)")
    g.add_argument("--storage", help="Optuna storage URL (any SQLAlchemy URL, e.g. postgresql://USER:PASSWORD@HOST/DB "
                                      "with pip install 'latency-nas[postgres]'; default sqlite in --out); runs "
                                      "sharing one database need distinct --out folder names")
    g.add_argument("--top-k", type=int, default=5, help="architectures in best.json (default 5)")
    g.add_argument("--quick", action="store_true",
                   help="a dry run in about a minute: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                    QUICK.items()) +
                        ", and a one-epoch supernet with --evaluator supernet; options given explicitly win")
    return p


# --quick: the smallest budgets that still run every stage (synthetic data is the default).
QUICK = {"trials": 4, "workers": 0, "steps": 4, "train_resolution": 8, "batch_size": 64, "bn_batches": 2}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; with ``--quick`` the :data:`QUICK` budgets replace the defaults, not given options."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
        if args.evaluator == "supernet" and args.supernet is None and args.supernet_epochs is None:
            args.supernet_epochs = 1
    return args


def _evaluator(args: argparse.Namespace) -> EvaluatorSettings:
    """The flags' combinations; the settings check their own values."""
    budget = [flag for flag, value in (("--supernet-epochs", args.supernet_epochs),
                                       ("--supernet-rule", args.supernet_rule)) if value is not None]
    if args.evaluator != "supernet" and (budget or args.supernet):
        raise NasError(f"{(budget or ['--supernet'])[0]} needs --evaluator supernet")
    if args.supernet and budget:
        raise NasError(f"{budget[0]} sets the budget of a supernet trained in the run; --supernet reuses a "
                       "trained one")
    return EvaluatorSettings(
        kind=args.evaluator, supernet=None if args.supernet is None else str(args.supernet.resolve()),
        epochs=_SUPERNET.epochs if args.supernet_epochs is None else args.supernet_epochs,
        rule=args.supernet_rule or _SUPERNET.rule)


def _choose(value: str, options: Sequence[str], what: str) -> str:
    if value not in options:
        raise NasError(f"unknown {what} {value!r}; known: {', '.join(options)}")
    return value


def _objective(args: argparse.Namespace, latency_model) -> Objective:
    mode = args.objective or ("pareto" if args.controller == "nsga2" else "reward")
    _choose(mode, MODES, "objective")
    if mode == "pareto" and args.controller in ("rl", "evolution"):
        raise NasError(f"the {args.controller} controller needs a scalar reward: use --objective reward, or "
                       "--controller nsga2/tpe for a Pareto front")
    target_ms = args.latency_target
    if target_ms is None:
        from nas import zoo

        target_ms = round(latency_model.predict(zoo.get(DEFAULT_T_NETWORK), args.latency_resolution).ms, 2)
        print(f"latency target T = {target_ms} ms ({DEFAULT_T_NETWORK} on {args.target})", file=sys.stderr)
    base = Objective.preset(_choose(args.reward, tuple(PRESETS), "reward preset"), target_ms=target_ms, mode=mode)
    return Objective(target_ms=target_ms, alpha=base.alpha if args.alpha is None else args.alpha,
                     beta=base.beta if args.beta is None else args.beta, mode=mode)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _choose(args.target, TARGETS, "target")
    args.target = resolve_target(args.target, args.calibration)
    _choose(args.space, SPACES, "search space")
    _choose(args.controller, CONTROLLERS, "controller")
    evaluator = _evaluator(args)
    check_device(args.device, here=args.ray_address is None)
    if args.ray_address:
        probe(args.ray_address)
    if args.latency_target is not None and not args.latency_target > 0:
        raise NasError(f"--latency-target must be a positive number of ms, got {args.latency_target}")
    proxy = ProxySettings(data=args.data, resolution=args.train_resolution, epochs=args.epochs, steps=args.steps,
                          batch_size=args.batch_size, bn_batches=args.bn_batches, lr=args.lr,
                          val_fraction=args.val_fraction, seed=args.seed, deploy_resolution=args.latency_resolution,
                          device=args.device)
    open_data(proxy)  # a bad --data fails before a run directory is announced (cached for the run)
    from nas.latency.predict import get_latency_model

    latency_model = get_latency_model(args.target)
    out = args.out or default_out_dir()
    config = SearchConfig(out=out, objective=_objective(args, latency_model), target=args.target, space=args.space,
                          controller=args.controller, trials=args.trials, workers=args.workers, proxy=proxy,
                          seed=args.seed, population=args.population,
                          ppo=PPOSettings(lr=args.ppo_lr, batch=args.ppo_batch), storage=args.storage,
                          ray_address=args.ray_address, top_k=args.top_k, evaluator=evaluator)
    resume = shlex.join(["python", "-m", "nas.search", *(argv if argv is not None else sys.argv[1:])]
                        + ([] if args.out else ["--out", str(out)]))
    print(f"run directory {out}  (resume with: {resume})", file=sys.stderr)
    try:
        summary = run_search(config, latency_model=latency_model)
    except KeyboardInterrupt:
        print(f"stopped; finished trials are saved in {out}. Resume with: {resume}", file=sys.stderr)
        raise
    table = summary.trials
    failed = sum(not record.ok for record in summary.records)
    print(f"{summary.finished}/{summary.requested} trials finished ({failed} failed) in {out}")
    if summary.best is not None:
        top = table[table["status"] == Status.OK.value].sort_values("reward", ascending=False).head(config.top_k)
        print(top[["trial_id", "reward", "accuracy", "latency_ms", "params", "madds"]].to_string(index=False))
    if not summary.complete:
        print(f"stopped early; resume with: {resume}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
