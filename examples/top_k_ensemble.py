"""An ensemble of the k best models of a hyperparameter search (file 001, recipe 2), next to the best model alone.

    python examples/top_k_ensemble.py --trials 12 --k 4 --epochs 10

A random search over the lab's MLP (width, learning rate, dropout) on digits scores every trial by its
validation accuracy; ``Ensemble.from_study`` trains the ``k`` best trials again through ``optreg.train.run``
with the objective's seed (so each member is the model its trial scored) and averages their probabilities.
The search and the choice of members see only the validation split; the test split is scored once, at the
end, for the best trial alone, for the top-k ensemble, and for ``k`` seeds of the best trial's
hyperparameters (recipe 1, the same budget of members).
"""

from __future__ import annotations

import argparse

from optreg import hpo
from optreg.data import load
from optreg.train import run
from optreg.train.ensemble import Ensemble


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load("digits", 0, val_fraction=0.2)
    space = {"width": hpo.Categorical([16, 32, 64, 128]), "lr": hpo.Float(3e-4, 3e-2, log=True),
             "dropout": hpo.Categorical([0.0, 0.1, 0.3])}  # fmt: skip

    def spec(params: dict) -> dict:
        return {"model": {"kind": "mlp", "hidden": [params["width"]] * 2, "dropout": params["dropout"]},
                "optimizer": {"name": "adam", "lr": params["lr"]},
                "train": {"epochs": args.epochs, "batch_size": 64}}  # fmt: skip

    def objective(params: dict) -> float:
        return run(spec(params), data, seed=args.seed).final("val_accuracy")

    study = hpo.maximize(objective, space, method="random", n_trials=args.trials, seed=args.seed)
    for t in study.top_trials(args.k):
        print(f"trial {t.number:3d}  val_accuracy {t.value:.4f}  {t.params}")

    top = Ensemble.from_study(study, args.k, spec=spec, data=data, seed=args.seed)
    seeds = Ensemble.from_initializations(
        lambda s: run(spec(study.best_params), data, seed=s).model, range(args.seed, args.seed + args.k)
    )
    scores = {"best trial alone": Ensemble([top.members[0]]).evaluate(data.test),
              f"top-{args.k} trials": top.evaluate(data.test),
              f"best trial, {args.k} seeds": seeds.evaluate(data.test)}  # fmt: skip
    for name, s in scores.items():
        print(f"{name:>22}: test accuracy {s['accuracy']:.4f}  ECE {s['ece']:.4f}  NLL {s['nll']:.4f}  "
              f"disagreement {s['disagreement']:.3f}")  # fmt: skip
    return {name: {key: s[key] for key in ("accuracy", "ece", "nll", "disagreement")} for name, s in scores.items()}


if __name__ == "__main__":
    main()
