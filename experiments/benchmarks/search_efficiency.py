"""Search efficiency: do the RL and TPE controllers beat random search at a fixed trial budget?

Each controller runs the same search (space, target, latency target T, budget) under several
seeds; the figure of merit is the best MnasNet reward found, per seed and on average. Every run
is an ordinary ``nas.search`` run directory under ``--out``, so its trials can be inspected.

Two accuracy sources (``--accuracy``):

* ``train`` (default): the search's real proxy training on the built-in synthetic task, at a
  tiny budget (``--steps`` SGD steps at ``--train-resolution`` px). Honest but noisy: a few steps
  rank architectures weakly, so many trials are needed for a stable comparison.
* ``surrogate``: a CHEAP STAND-IN, NOT TRAINING. Accuracy is a saturating function of the
  candidate's MAdds at 224 px, ``0.80 - 0.126 * (MAdds / 56M) ** -0.713``, which passes through
  the published ImageNet top-1 of MobileNetV3-Small (67.4 % at 56 M) and -Large (75.2 % at 217 M)
  and saturates at 80 %. It keeps MnasNet's trade-off (accuracy grows with compute, latency
  costs reward) and is deterministic, so controller differences are not drowned in noise.

Latency always comes from the target's latency model at 224 px, as in the search; the script
checks that every reported latency equals the model's prediction for the trial's architecture.

**Rescoring** (``train`` only, ``--rescore K``): a run's best reward is the maximum of noisy
evaluations, so it rewards a controller for one lucky training run as much as for a good
architecture. Each run's top-K architectures (by search reward) are therefore trained again
under ``--rescore-seeds`` other proxy seeds (fresh weights, data order and validation split);
``rescored_best`` is the best of their mean-accuracy rewards. Every controller's candidates are
rescored under the same seeds, so the comparison is between the architectures they found.

    python experiments/benchmarks/search_efficiency.py --accuracy surrogate --trials 48
    python experiments/benchmarks/search_efficiency.py --accuracy train --trials 16 --steps 8
    python experiments/benchmarks/search_efficiency.py --accuracy train --trials 32 --steps 20 --rescore 3
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from nas import zoo
from nas.arch import ArchSpec
from nas.cli import run
from nas.errors import NasError
from nas.profile import profile
from nas.search.controllers import PPOSettings
from nas.search.evaluate import Evaluation, ProxySettings, evaluate_candidate
from nas.search.objectives import Objective
from nas.search.runner import SearchConfig, run_search

# The benchmark's proxy training; --train-resolution and --steps set the rest (proxy_noise.py shares it).
PROXY = ProxySettings(batch_size=32, bn_batches=4, synthetic_train=1000, synthetic_val=250)
SMALL_MADDS, SMALL_TOP1, LARGE_MADDS, LARGE_TOP1, CEILING = 56e6, 0.674, 217e6, 0.752, 0.80


def surrogate_accuracy(madds: float) -> float:
    """ImageNet-like top-1 from MAdds alone (see the module docstring); no training."""
    import math

    k = math.log((CEILING - SMALL_TOP1) / (CEILING - LARGE_TOP1)) / math.log(LARGE_MADDS / SMALL_MADDS)
    return CEILING - (CEILING - SMALL_TOP1) * (madds / SMALL_MADDS) ** -k


def surrogate_evaluator(spec: ArchSpec, settings: ProxySettings) -> Evaluation:
    deployed = profile(spec, settings.deploy_resolution)
    return Evaluation(status="ok", accuracy=surrogate_accuracy(deployed.madds), params=deployed.params,
                      madds=deployed.madds)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accuracy", default="train", help="train (tiny real proxy training) | surrogate (see above)")
    p.add_argument("--controllers", nargs="+", default=["rl", "tpe", "random"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=24, help="budget per run (default 24)")
    p.add_argument("--target", default="pixel-cpu")
    p.add_argument("--space", default="mnasnet")
    p.add_argument("--latency-target", type=float, default=None,
                   help="T in ms (default: MobileNetV3-Large's predicted latency on the target)")
    p.add_argument("--steps", type=int, default=8, help="train: SGD steps per candidate (default 8)")
    p.add_argument("--train-resolution", type=int, default=16, help="proxy training image size (default 16)")
    p.add_argument("--workers", type=int, default=0, help="0 = serial in this process (default), else Ray workers")
    p.add_argument("--ppo-batch", type=int, default=4)
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--rescore", type=int, default=0, metavar="K",
                   help="train: retrain each run's top K architectures under --rescore-seeds (default 0: off)")
    p.add_argument("--rescore-seeds", nargs="+", type=int, default=[100, 101, 102])
    p.add_argument("--out", type=Path, default=Path("runs/search_efficiency"))
    return p


def rescored_best(ok: pd.DataFrame, k: int, seeds: list[int], proxy: ProxySettings, objective: Objective) -> float:
    """Best reward among the top-``k`` architectures, each scored by its mean accuracy over ``seeds``."""
    best = float("-inf")
    for row in ok.nlargest(k, "reward").itertuples():
        spec = ArchSpec.from_string(row.arch)
        runs = [evaluate_candidate(spec, replace(proxy, seed=seed)) for seed in seeds]
        accuracies = [r.accuracy for r in runs if r.ok]
        if len(accuracies) != len(seeds):
            raise NasError(f"rescoring {row.arch}: {len(seeds) - len(accuracies)} of {len(seeds)} runs failed")
        best = max(best, objective.reward(sum(accuracies) / len(accuracies), row.latency_ms))
    return best


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.accuracy not in ("train", "surrogate"):
        raise NasError(f"unknown accuracy source {args.accuracy!r}; known: train, surrogate")
    if args.rescore and args.accuracy != "train":
        raise NasError("--rescore retrains candidates: it needs --accuracy train")
    from nas.latency.predict import get_latency_model

    model = get_latency_model(args.target)
    target_ms = args.latency_target or round(model.predict(zoo.get("mobilenet_v3_large")).ms, 2)
    proxy = replace(PROXY, resolution=args.train_resolution, steps=args.steps)
    evaluator = surrogate_evaluator if args.accuracy == "surrogate" else evaluate_candidate
    objective = Objective(target_ms=target_ms)
    print(f"accuracy: {args.accuracy}; target {args.target}, T = {target_ms} ms; {args.trials} trials x "
          f"{len(args.seeds)} seeds per controller", flush=True)
    rows = []
    for controller in args.controllers:
        for seed in args.seeds:
            out = args.out / args.accuracy / f"{controller}-seed{seed}"
            config = SearchConfig(out=out, objective=objective, target=args.target,
                                  space=args.space, controller=controller, trials=args.trials, workers=args.workers,
                                  proxy=replace(proxy, seed=seed), seed=seed, population=args.population,
                                  ppo=PPOSettings(batch=args.ppo_batch))
            start = time.perf_counter()
            summary = run_search(config, latency_model=model, evaluator=evaluator)
            table = summary.trials
            ok = table[table["status"] == "ok"]
            for spec_text, latency in zip(ok["arch"], ok["latency_ms"]):
                predicted = model.predict(ArchSpec.from_string(spec_text)).ms
                if abs(predicted - latency) > 1e-6 * max(1.0, predicted):
                    raise NasError(f"{out}: reported latency {latency} differs from the model's {predicted}")
            rows.append({"controller": controller, "seed": seed, "best_reward": ok["reward"].max(),
                         "mean_reward_last_half": ok["reward"].iloc[len(ok) // 2:].mean(),
                         "best_accuracy": ok["accuracy"].max(), "failed": int((table["status"] != "ok").sum()),
                         "seconds": round(time.perf_counter() - start, 1)})
            if args.rescore:
                rows[-1]["rescored_best"] = rescored_best(ok, args.rescore, args.rescore_seeds, proxy, objective)
    results = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / f"{args.accuracy}_results.csv", index=False)
    print(results.to_string(index=False))
    compared = ["best_reward", *(["rescored_best"] if args.rescore else [])]
    summary = results.groupby("controller")[[*compared, "mean_reward_last_half"]].agg(["mean", "std"])
    print(summary.to_string())
    for figure in compared:
        random_best = results[results["controller"] == "random"].set_index("seed")[figure]
        for controller in args.controllers:
            if controller == "random" or random_best.empty:
                continue
            mine = results[results["controller"] == controller].set_index("seed")[figure]
            wins = int((mine > random_best.reindex(mine.index)).sum())
            print(f"{controller} beats random on {figure} in {wins}/{len(mine)} seeds "
                  f"(mean {mine.mean():.4f} vs {random_best.mean():.4f})")
    print("every reported latency equals the latency model's prediction: yes")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
