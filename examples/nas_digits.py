"""Neural architecture search (7.6.4.1) on digits: a controller RNN proposes the lab's MLP architectures.

    python examples/nas_digits.py --trials 30 --epochs 5 [--random]

Each trial builds the MLP that the controller emitted (layers, a width per layer, activation, norm,
dropout) with ``optreg.hpo.nas_to_model_spec``, trains it with ``optreg.train.run`` and returns the
validation accuracy (the reward; the test split is scored only for the best architecture at the end).
``--random`` runs random search with the same budget next to it.
"""

from __future__ import annotations

import argparse

from optreg import hpo
from optreg.data import load
from optreg.train import run


def main(argv: list[str] | None = None) -> dict[str, hpo.Study]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random", action="store_true", help="also run random search with the same budget")
    parser.add_argument("--storage", default=None, help="a SQLite file: the study resumes from it if killed")
    args = parser.parse_args(argv)

    data = load("digits", 0, val_fraction=0.2)
    space = hpo.nas_space(max_layers=3, widths=(16, 32, 64, 128), activations=("relu", "tanh", "gelu"),
                          norms=("none", "batch", "layer"), dropouts=(0.0, 0.1, 0.3))  # fmt: skip

    def spec(params: dict) -> dict:
        return {"model": hpo.nas_to_model_spec(params), "optimizer": {"name": "adam", "lr": 3e-3},
                "train": {"epochs": args.epochs, "batch_size": 64}}  # fmt: skip

    def objective(params: dict) -> float:
        return run(spec(params), data, seed=0).final("val_accuracy")

    def show(study: hpo.Study, trial: hpo.Trial) -> None:
        arch = hpo.nas_to_model_spec(trial.params)
        print(
            f"{study.method.name:>6} {trial.number:3d}  val_acc {trial.value:.4f}  best {study.best_value:.4f}  "
            f"hidden {arch['hidden']} {arch['activation']} norm={arch['norm']} dropout={arch['dropout']}"
        )

    studies = {}
    for method in ("nas", "random") if args.random else ("nas",):
        studies[method] = hpo.maximize(objective, space, method=method, n_trials=args.trials, seed=args.seed,
                                       storage=args.storage, name=method, callback=show)  # fmt: skip
    for method, study in studies.items():
        best = run(spec(study.best_params), data, seed=0)
        print(
            f"{method}: best val_accuracy {study.best_value:.4f}, its test_accuracy {best.test_accuracy:.4f}, "
            f"{hpo.nas_to_model_spec(study.best_params)}"
        )
    return studies


if __name__ == "__main__":
    main()
