r"""Regularization through the data and the training procedure: augmentation, noise, greedy pretraining.

Three experiments, each a table of measured numbers and a claims table (``Result.claims``: one row per
claim of the chapter, holds / does not hold here), on digits (8x8 images, flattened for an MLP; the
augmentations view them as images):

``augmentation`` (section 7.7.5)
    "With limited data, data augmentation increases the amount of data, improves the model's robustness
    and avoids overfitting." The same MLP, trained for the same number of updates, with and without a
    random affine warp (rotation, shift, zoom) plus pixel noise (:mod:`optreg.data.augment`, through the
    Trainer's ``batch_transform``), at training-set sizes from 50 examples to the whole set: train,
    validation and test accuracy, the train - test gap, and the accuracy on a warped copy of the test set
    (robustness).
``noise`` (file 004; Zhang et al., 2017)
    "More generally we can add other random noise to the activations: random noise on the training set,
    noise on the weights, (suitably) shuffled labels." Input noise (:class:`~optreg.regularize.noise.GaussianNoise`),
    weight noise (:class:`~optreg.regularize.noise.WeightNoise`), a few shuffled labels
    (:func:`~optreg.regularize.noise.label_noise`) against none on a small training set; and Zhang et al.'s
    randomization test, which the chapter cites (section 7.8): a network fits *all-shuffled* labels (train
    accuracy high, test at chance), it takes longer than fitting the true labels, and with part of the
    labels wrong it fits the clean examples first.
``pretraining`` (file 002; section 7.8)
    Greedy supervised layer-wise pretraining (:func:`optreg.train.greedy_layerwise`) of a deep MLP plus
    fine-tuning, against training the same network from the same initial weights end to end for the same
    total number of epochs, in the setting where pretraining was invented (sigmoid units, plain SGD) and in
    a modern one (ReLU, Adam), where the chapter says it is no longer needed.

Models are chosen by nothing: every run trains a fixed budget and reports its final model (no choice by
the test set anywhere; where a setting is chosen among several, e.g. the input-noise level for a claim, it
is chosen by validation accuracy). Spreads are population standard deviations over the seeds (``_sd``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from optreg.data import Split
from optreg.data.augment import AddGaussianNoise, RandomAffine, as_batch_transform, compose
from optreg.experiments.base import Context, Result, RunHistory, claim, curves, exceeds, mean_std, register, within
from optreg.regularize.noise import GaussianNoise, WeightNoise, label_noise
from optreg.report import plots
from optreg.train import Callback, Trainer, greedy_layerwise
from optreg.train.run import build_model, build_optimizer

__all__ = ["AUGMENT", "accuracy", "augment_transform", "run_augmentation", "run_noise", "run_pretraining"]

IMAGE = (1, 8, 8)
#: The augmentation of the ``augmentation`` experiment (digits are 8x8 with values in [0, 1]; no flips:
#: a mirrored digit is another symbol).
AUGMENT = compose(RandomAffine(degrees=12.0, max_shift=0.8, scale=(0.9, 1.1)), AddGaussianNoise(0.05))


def augment_transform() -> Any:
    """:data:`AUGMENT` as the Trainer's ``batch_transform`` on flat digits ``(N, 64)``."""
    return as_batch_transform(AUGMENT, shape=IMAGE)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """The fraction of ``argmax model(x) == y`` in evaluation mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    hits = (model(x).argmax(-1) == y).double().mean().item()
    model.train(was)
    return hits


def _spec(label: str, model: dict[str, Any], lr: float, seed: int, **train: Any) -> dict[str, Any]:
    return {"name": label, "model": model, "optimizer": {"name": "adam", "lr": lr},
            "train": {"batch_size": 32, "seed": seed, **train}}  # fmt: skip


def _rows(groups: dict[Any, list[dict[str, float | None]]], keys: Sequence[str], head: dict[Any, dict[str, Any]]):
    """One table row per group: ``head[group]`` then ``key`` (mean) and ``key_sd`` for each key."""
    out = []
    for group, runs in groups.items():
        row = dict(head[group])
        for key in keys:
            row[key], row[f"{key}_sd"] = mean_std(r[key] for r in runs)
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------- augmentation


def _examples_figure(x: Tensor, seed: int) -> Any:
    """Four digits (left column) and five augmented draws of each, as one mosaic."""
    g = torch.Generator().manual_seed(seed)
    images = x[:4].reshape(4, *IMAGE)
    draws = torch.stack([images] + [AUGMENT(images, g) for _ in range(5)], 1)[:, :, 0].clamp(0, 1)  # (4, 6, 8, 8)
    mosaic = torch.ones(4 * 9 - 1, 6 * 9 - 1)
    for r in range(4):
        for c in range(6):
            mosaic[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = draws[r, c]
    fig, (ax,) = plots.new_figure(title="Section 7.7.5: digits (left) and five random augmentations of each",
                                  panel_size=(6.0, 4.2))  # fmt: skip
    ax.imshow(mosaic.numpy(), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([4 + 9 * c for c in range(6)], ["original"] + [f"draw {c}" for c in range(1, 6)])
    ax.set_yticks([])
    return fig


@register(
    "augmentation",
    title="Data augmentation against training-set size",
    figure="section 7.7.5",
    help="rotation / shift / zoom / noise vs none at 50..all training digits: accuracy, gap, robustness",
)
def run_augmentation(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=3)
    steps = 60 if ctx.quick else 1000
    model = {"kind": "mlp", "hidden": [256], "activation": "relu"}
    groups: dict[tuple[int, str], list[dict[str, float | None]]] = {}
    head: dict[tuple[int, str], dict[str, Any]] = {}
    histories: dict[str, list[RunHistory]] = {}
    full = len(ctx.load_data(seeds[0]).train.y)  # every seed's split has the same size
    sizes = sorted({n for n in ((50, 200) if ctx.quick else (50, 100, 200, 400)) if n < full} | {full})
    settings = ("none", "augmented")
    ctx.expect_runs(len(seeds) * len(sizes) * len(settings))
    for seed in seeds:
        data = ctx.load_data(seed)
        g = torch.Generator().manual_seed(10_000 + seed)
        warped_test = AUGMENT(data.test.x.reshape(-1, *IMAGE), g).reshape(data.test.x.shape)
        for n in sizes:
            subset = data._replace(train=Split(data.train.x[:n], data.train.y[:n]))
            for setting in settings:
                transform = augment_transform() if setting == "augmented" else None
                label = f"n={n} {setting}"
                spec = _spec(label, model, 1e-3, seed, steps=steps, log_every=10, batch_transform=transform)
                h = ctx.train_spec(spec, subset, config={"n_train": n, "augmentation": repr(transform)})
                if n == sizes[0]:
                    histories.setdefault(setting, []).append(h)
                train_acc = accuracy(h.model, subset.train.x, subset.train.y)
                groups.setdefault((n, setting), []).append({
                    "train_accuracy": train_acc,
                    "val_accuracy": h.final("val_accuracy"),
                    "test_accuracy": h.test_accuracy,
                    "gap": train_acc - h.test_accuracy,
                    "warped_test_accuracy": accuracy(h.model, warped_test, data.test.y),
                })  # fmt: skip
                head[(n, setting)] = {"n_train": n, "augmentation": setting, "updates": steps}
    keys = ("train_accuracy", "val_accuracy", "test_accuracy", "gap", "warped_test_accuracy")
    table = _rows(groups, keys, head)
    by = {(r["n_train"], r["augmentation"]): r for r in table}
    small, large = sizes[0], sizes[-1]

    def seeds_of(n: int, setting: str, key: str) -> list[float | None]:
        return [r[key] for r in groups[(n, setting)]]

    def gains(n: int) -> list[float]:  # per seed: augmented - none (the same seed's data and initial weights)
        pairs = zip(seeds_of(n, "augmented", "test_accuracy"), seeds_of(n, "none", "test_accuracy"))
        return [a - b for a, b in pairs if a is not None and b is not None]

    narrower = exceeds(seeds_of(small, "none", "gap"), seeds_of(small, "augmented", "gap"))
    better = exceeds(seeds_of(small, "augmented", "test_accuracy"), seeds_of(small, "none", "test_accuracy"))
    shrinks = exceeds(gains(small), gains(large))
    robust = exceeds(seeds_of(large, "augmented", "warped_test_accuracy"),
                     seeds_of(large, "none", "warped_test_accuracy"))
    claims = [
        claim(f"with limited data augmentation avoids overfitting (7.7.5): a smaller train - test gap at n = {small}",
              f"gap none {by[(small, 'none')]['gap']:.3f}, augmented {by[(small, 'augmented')]['gap']:.3f}; "
              f"none - augmented {narrower.text}", narrower.holds),
        claim(f"... and improves generalization: a higher test accuracy at n = {small}",
              "test accuracy " + ", ".join(f"{s} {by[(small, s)]['test_accuracy']:.3f} (sd "
                                           f"{by[(small, s)]['test_accuracy_sd']:.3f})" for s in ("none", "augmented"))
              + f"; augmented - none {better.text}", better.holds),
        claim("augmentation helps most where data are scarce: the test-accuracy gain shrinks with more data",
              f"gain at n = {small}: {mean_std(gains(small))[0]:+.3f}, at n = {large}: "
              f"{mean_std(gains(large))[0]:+.3f}; difference {shrinks.text}", shrinks.holds),
        claim(f"augmentation improves robustness (7.7.5): higher accuracy on a warped test set at n = {large}",
              f"warped-test accuracy none {by[(large, 'none')]['warped_test_accuracy']:.3f}, augmented "
              f"{by[(large, 'augmented')]['warped_test_accuracy']:.3f}; augmented - none {robust.text}",
              robust.holds),
    ]  # fmt: skip
    data = ctx.load_data(seeds[0])
    acc_fig = plots.curves_figure(
        [
            plots.Panel({s: [[r["test_accuracy"] for r in _per_seed(groups, sizes, s, i)] for i in range(len(seeds))]
                         for s in ("none", "augmented")}, x=sizes, log_x=True, title="test accuracy",
                        xlabel="training examples", ylabel="accuracy"),
            plots.Panel({s: [[r["gap"] for r in _per_seed(groups, sizes, s, i)] for i in range(len(seeds))]
                         for s in ("none", "augmented")}, x=sizes, log_x=True, title="train - test accuracy gap",
                        xlabel="training examples", ylabel="gap"),
            plots.Panel(curves(histories, "val_accuracy", "epochs"), title=f"validation accuracy, n = {small}",
                        xlabel="epoch", ylabel="accuracy"),
        ],
        title=f"Section 7.7.5: augmentation vs none, MLP {model['hidden']}, {steps} updates ({len(seeds)} seed(s))",
    )  # fmt: skip
    notes = (
        f"MLP {model['hidden']} (ReLU), Adam lr 1e-3, batch 32, {steps} updates at every size (the same compute), "
        f"final model. Augmentation: {AUGMENT!r}. Train accuracy is on the clean training subset; the warped test "
        f"set is the test set under one fixed draw of the same augmentation. Means over {len(seeds)} seed(s)."
    )  # fmt: skip
    return Result(table=table, claims=claims, notes=notes,
                  figures={"examples": _examples_figure(data.train.x, 0), "accuracy": acc_fig})  # fmt: skip


def _per_seed(groups: dict, sizes: Sequence[int], setting: str, i: int) -> list[dict[str, float | None]]:
    return [groups[(n, setting)][i] for n in sizes]


# ------------------------------------------------------------------------------------------- noise


class _SubsetAccuracy(Callback):
    """After every epoch: the training accuracy (against the labels trained on) on the examples whose label
    was kept and on those whose label was corrupted."""

    def __init__(self, x: Tensor, y_train: Tensor, corrupted: Tensor) -> None:
        self.x, self.y, self.corrupted = x, y_train, corrupted
        self.clean: list[float] = []
        self.noisy: list[float] = []

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        with torch.no_grad():
            was = trainer.model.training
            trainer.model.eval()
            hit = trainer.model(self.x).argmax(-1) == self.y
            trainer.model.train(was)
        self.clean.append(hit[~self.corrupted].double().mean().item())
        self.noisy.append(hit[self.corrupted].double().mean().item() if self.corrupted.any() else math.nan)


def _first(values: Sequence[float | None], threshold: float) -> int | None:
    """The first epoch (1-based) whose value reaches ``threshold``; None if none does."""
    return next((i + 1 for i, v in enumerate(values) if v is not None and v >= threshold), None)


NOISE_SETTINGS = ("none", "input noise 0.1", "input noise 0.3", "weight noise 0.05", "10% labels shuffled",
                  "20% labels wrong", "all labels shuffled")  # fmt: skip


@register(
    "noise",
    title="Noise injection: on inputs, weights and labels; fitting shuffled labels",
    figure="file 004; Zhang et al. 2017",
    help="input / weight noise and shuffled labels vs none; a net fits random labels (train high, test at chance)",
)
def run_noise(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=3)
    epochs = ctx.epoch_count(default=200, quick=4)
    n_train = 200 if ctx.quick else 300
    model_spec = {"kind": "mlp", "hidden": [512], "activation": "relu"}
    lr = 1e-3
    groups: dict[str, list[dict[str, float | None]]] = {s: [] for s in NOISE_SETTINGS}
    learned: dict[str, list[tuple[int | None, float | None]]] = {"20% labels wrong": []}
    histories: dict[str, list[RunHistory]] = {}
    ctx.expect_runs(len(seeds) * len(NOISE_SETTINGS))
    for seed in seeds:
        data = ctx.load_data(seed)
        x, y_true = data.train.x[:n_train], data.train.y[:n_train]
        g = torch.Generator().manual_seed(20_000 + seed)
        labels = {
            "10% labels shuffled": label_noise(y_true, 0.1, mode="shuffle", generator=g),
            "20% labels wrong": label_noise(y_true, 0.2, num_classes=data.n_classes, mode="other", generator=g),
            "all labels shuffled": label_noise(y_true, 1.0, mode="shuffle", generator=g),
        }
        for setting in NOISE_SETTINGS:
            y = labels.get(setting, y_true)
            subset = data._replace(train=Split(x, y))
            transform = GaussianNoise(float(setting.split()[-1])) if setting.startswith("input") else None
            callbacks: list[Callback] = []
            if setting == "20% labels wrong":
                tracker = _SubsetAccuracy(x, y, y != y_true)
                callbacks.append(tracker)
            label = f"{setting} (seed {seed})"
            if setting.startswith("weight"):
                h = _train_weight_noise(ctx, label, model_spec, subset, seed, epochs, lr, std=0.05)
            else:
                spec = _spec(setting, model_spec, lr, seed, epochs=epochs, log_every=10, batch_transform=transform)
                h = ctx.train_spec(spec, subset, callbacks=callbacks, config={"n_train": n_train, "setting": setting})
            histories.setdefault(setting, []).append(h)
            train_acc = accuracy(h.model, x, y)
            groups[setting].append({
                "train_accuracy": train_acc,
                "train_accuracy_true_labels": accuracy(h.model, x, y_true),
                "val_accuracy": h.final("val_accuracy"),
                "best_val_accuracy": max(h.column("val_accuracy")),
                "test_accuracy": h.test_accuracy,
                "gap": train_acc - h.test_accuracy,
                "epochs_to_95pct_train": _first(h.column("train_accuracy"), 0.95),
            })  # fmt: skip
            if setting == "20% labels wrong":
                at = _first(tracker.clean, 0.9)
                learned[setting].append((at, None if at is None else tracker.noisy[at - 1]))
    keys = ("train_accuracy", "train_accuracy_true_labels", "val_accuracy", "best_val_accuracy", "test_accuracy",
            "gap", "epochs_to_95pct_train")  # fmt: skip
    table = _rows(groups, keys, {s: {"setting": s, "n_train": n_train, "epochs": epochs} for s in NOISE_SETTINGS})
    for row in table:
        fitted = [r["epochs_to_95pct_train"] for r in groups[row["setting"]]]
        row["runs_reaching_95pct"] = sum(f is not None for f in fitted)
    by = {r["setting"]: r for r in table}
    none = by["none"]
    inputs = max(("input noise 0.1", "input noise 0.3"), key=lambda s: by[s]["val_accuracy"])  # by validation
    chance = 1.0 / ctx.load_data(seeds[0]).n_classes
    shuffled = by["all labels shuffled"]
    fit_true = [r["epochs_to_95pct_train"] for r in groups["none"]]
    fit_rand = [r["epochs_to_95pct_train"] for r in groups["all labels shuffled"]]
    slower = all(t is not None and (r is None or r > t) for t, r in zip(fit_true, fit_rand))
    ats = learned["20% labels wrong"]
    noisy_at = [v for _, v in ats if v is not None]
    first = [a for a, _ in ats]

    def gap(s: str) -> str:
        return f"{by[s]['gap']:.3f} (test {by[s]['test_accuracy']:.3f})"

    def seeds_of(s: str, key: str) -> list[float | None]:
        return [r[key] for r in groups[s]]

    input_gap = exceeds(seeds_of("none", "gap"), seeds_of(inputs, "gap"))
    input_test = exceeds(seeds_of(inputs, "test_accuracy"), seeds_of("none", "test_accuracy"))
    weight_gap = exceeds(seeds_of("none", "gap"), seeds_of("weight noise 0.05", "gap"))
    label_test = exceeds(seeds_of("10% labels shuffled", "test_accuracy"), seeds_of("none", "test_accuracy"))
    early = exceeds(seeds_of("20% labels wrong", "best_val_accuracy"), seeds_of("20% labels wrong", "val_accuracy"))
    fits = exceeds(seeds_of("all labels shuffled", "train_accuracy"), 0.95)
    at_chance = within(seeds_of("all labels shuffled", "test_accuracy"), chance, 0.05)
    claims = [
        claim(f"noise on the training inputs regularizes (file 004): a smaller gap than none ({inputs}, chosen by "
              "validation)", f"gap none {gap('none')}, {inputs} {gap(inputs)}; none - noise {input_gap.text}",
              input_gap.holds),
        claim("... and improves test accuracy", f"none {none['test_accuracy']:.3f}, {inputs} "
              f"{by[inputs]['test_accuracy']:.3f}; noise - none {input_test.text}", input_test.holds),
        claim("noise on the weights regularizes (file 004): a smaller gap than none",
              f"gap none {gap('none')}, weight noise 0.05 {gap('weight noise 0.05')}; none - noise {weight_gap.text}",
              weight_gap.holds),
        claim("(suitably) shuffling training labels regularizes (file 004): a higher test accuracy than none",
              f"none {none['test_accuracy']:.3f}, 10% shuffled {by['10% labels shuffled']['test_accuracy']:.3f}; "
              f"shuffled - none {label_test.text}", label_test.holds),
        claim("a network can fit completely shuffled labels (Zhang et al.): train accuracy high, test at chance",
              f"train accuracy on the shuffled labels {shuffled['train_accuracy']:.3f}, test "
              f"{shuffled['test_accuracy']:.3f} (chance {chance:.2f}); train - 0.95 {fits.text}, test - chance "
              f"{at_chance.text}", fits.holds and at_chance.holds),
        claim("fitting random labels takes longer than fitting the true ones (Zhang et al.)",
              f"epochs to 95% train accuracy per seed: true {fit_true}, shuffled {fit_rand} (None: not within "
              f"{epochs})", slower),
        claim("a network learns the general rules first, memorizes later (section 7.8, Zhang et al.): with 20% "
              "wrong labels, when 90% of the clean examples are fitted, most wrong ones are not yet",
              f"epoch of 90% on clean examples per seed {first}; share of the wrong labels fitted then "
              f"{[round(v, 3) for v in noisy_at]}", bool(noisy_at) and max(noisy_at) < 0.5),
        claim("... so under label noise the best validation accuracy comes before the end (early stopping helps)",
              f"20% wrong: best val {by['20% labels wrong']['best_val_accuracy']:.3f}, final val "
              f"{by['20% labels wrong']['val_accuracy']:.3f}; best - final {early.text}", early.holds),
    ]  # fmt: skip
    fig = plots.curves_figure(
        [plots.Panel(curves(histories, "train_accuracy", "epochs"), title="training accuracy (labels trained on)",
                     xlabel="epoch", ylabel="accuracy"),
         plots.Panel(curves(histories, "val_accuracy", "epochs"), title="validation accuracy", xlabel="epoch",
                     ylabel="accuracy")],
        title=f"File 004: noise injection, MLP {model_spec['hidden']} on {n_train} digits ({len(seeds)} seed(s))",
    )  # fmt: skip
    notes = (
        f"MLP {model_spec['hidden']} (ReLU), Adam lr {lr}, batch 32, {epochs} epochs on {n_train} training digits, "
        "final model. Input noise: x + s N(0, I) on every training batch (pixels in [0, 1]); weight noise: the "
        "forward pass with W + 0.05 N(0, I) (WeightNoise); '10% labels shuffled': 10% of the labels permuted among "
        "themselves; '20% labels wrong': 20% replaced by another class; 'all labels shuffled': every label "
        "permuted (Zhang et al.'s randomization test). train_accuracy is against the labels trained on, "
        f"train_accuracy_true_labels against the true ones. Means over {len(seeds)} seed(s)."
    )  # fmt: skip
    return Result(table=table, claims=claims, figures={"curves": fig}, notes=notes)


def _train_weight_noise(ctx: Context, label: str, model_spec: dict, data: Any, seed: int, epochs: int, lr: float,
                        *, std: float) -> RunHistory:  # fmt: skip
    """A run whose model is wrapped in :class:`WeightNoise` (a model the run spec cannot describe): the
    Trainer directly, recorded with :meth:`Context.record_run`."""
    model = WeightNoise(build_model(model_spec, data, seed=seed), std)
    trainer = Trainer(model, build_optimizer("adam", model.parameters(), {"lr": lr}), batch_size=32, epochs=epochs,
                      seed=seed, log_every=10)  # fmt: skip
    start = time.perf_counter()
    history = trainer.fit(data.train, data.val)
    seconds = time.perf_counter() - start
    test = trainer.evaluate(data.test)
    config = {"model": model_spec, "weight_noise": std, "optimizer": "adam", "lr": lr, "epochs": epochs,
              "n_train": len(data.train.y)}  # fmt: skip
    run_id = ctx.record_run(label, seed=seed, config=config, steps=history.iterations,
                            summary={"test_accuracy": test["accuracy"], "seconds": seconds})  # fmt: skip
    return RunHistory(history.iterations, history.epochs, run_id=run_id, label=label, seed=seed,
                      test_loss=test["loss"], test_accuracy=test["accuracy"], seconds=seconds, model=model)  # fmt: skip


# ------------------------------------------------------------------------------------------- pretraining


PRETRAIN_SETUPS = {
    "sigmoid + SGD": {"activation": "sigmoid", "optimizer": "sgd", "hparams": {"lr": 0.5}},
    "ReLU + Adam": {"activation": "relu", "optimizer": "adam", "hparams": {"lr": 1e-3}},
}


def _blocks(model: nn.Sequential) -> tuple[list[nn.Module], nn.Module]:
    """An optreg MLP (flatten, fc1, act1, ..., out) cut into blocks ``Sequential(fc_l, act_l)`` and the output."""
    children = list(model.children())
    flatten, body, out = children[0], children[1:-1], children[-1]
    blocks = [nn.Sequential(*([flatten] if i == 0 else []), body[i], body[i + 1]) for i in range(0, len(body), 2)]
    return blocks, out


@register(
    "pretraining",
    title="Greedy supervised layer-wise pretraining of a deep MLP",
    figure="file 002; section 7.8",
    help="greedy layer-by-layer pretraining + fine-tuning vs end-to-end training, same epochs and initial weights",
)
def run_pretraining(ctx: Context) -> Result:
    seeds = ctx.seed_list(default=3)
    depth, width = (3, 32) if ctx.quick else (6, 64)
    per_layer, finetune = (1, 1) if ctx.quick else (5, 20)
    total = depth * per_layer + finetune
    groups: dict[tuple[str, str], list[dict[str, float | None]]] = {}
    head: dict[tuple[str, str], dict[str, Any]] = {}
    curves_by: dict[str, list[list[float]]] = {}
    ctx.expect_runs(len(seeds) * len(PRETRAIN_SETUPS) * 2)  # end to end, then greedy + fine-tune
    for seed in seeds:
        data = ctx.load_data(seed)
        for setup, s in PRETRAIN_SETUPS.items():
            spec = {"kind": "mlp", "hidden": [width] * depth, "activation": s["activation"]}
            scratch = ctx.train_spec(
                {"name": f"{setup}: end to end", "model": spec, "optimizer": {"name": s["optimizer"], **s["hparams"]},
                 "train": {"batch_size": 32, "epochs": total, "seed": seed, "log_every": 10}},
                data, config={"setup": setup, "method": "end to end"},
            )  # fmt: skip
            blocks, output = _blocks(build_model(spec, data, seed=seed))  # the same initial weights
            snapshot: dict[str, float] = {}

            def after(stage: int, name: str, model: nn.Module, snapshot=snapshot, data=data) -> None:
                if name == f"layer {depth}":  # the greedy solution, before fine-tuning
                    snapshot["test"] = accuracy(model, data.test.x, data.test.y)

            start = time.perf_counter()
            result = greedy_layerwise(blocks, output, data.train, data.val, epochs_per_layer=per_layer,
                                      finetune_epochs=finetune, optimizer=s["optimizer"], hparams=s["hparams"],
                                      seed=seed, batch_size=32, log_every=10, on_stage_end=after)  # fmt: skip
            seconds = time.perf_counter() - start
            stage_seconds = [sum(r["time"] for r in h.epochs) for h in result.stages]
            steps = [dict(r, step=i * 10) for i, r in enumerate(r for h in result.stages for r in h.iterations)]
            test = accuracy(result.model, data.test.x, data.test.y)
            ctx.record_run(f"{setup}: greedy + fine-tune", seed=seed, steps=steps,
                           config={"setup": setup, "method": "greedy + fine-tune", "model": spec,
                                   "epochs_per_layer": per_layer, "finetune_epochs": finetune},
                           summary={"test_accuracy": test, "seconds": seconds})  # fmt: skip
            val_curve = [r["val_accuracy"] for h in result.stages for r in h.epochs]
            curves_by.setdefault(f"{setup}: greedy + fine-tune", []).append(val_curve)
            curves_by.setdefault(f"{setup}: end to end", []).append(scratch.column("val_accuracy"))
            pre_epochs = depth * per_layer
            groups.setdefault((setup, "end to end"), []).append({
                "train_accuracy": accuracy(scratch.model, data.train.x, data.train.y),
                "test_accuracy": scratch.test_accuracy,
                "greedy_only_test_accuracy": None,
                "seconds_per_epoch": scratch.seconds / total,
                "pretraining_seconds_per_epoch": None,
            })  # fmt: skip
            groups.setdefault((setup, "greedy + fine-tune"), []).append({
                "train_accuracy": accuracy(result.model, data.train.x, data.train.y),
                "test_accuracy": test,
                "greedy_only_test_accuracy": snapshot["test"],
                "seconds_per_epoch": seconds / total,
                "pretraining_seconds_per_epoch": sum(stage_seconds[:depth]) / pre_epochs,
            })  # fmt: skip
            for method in ("end to end", "greedy + fine-tune"):
                head[(setup, method)] = {"setup": setup, "method": method, "depth": depth, "width": width,
                                         "epochs": total}  # fmt: skip
    keys = ("train_accuracy", "test_accuracy", "greedy_only_test_accuracy", "seconds_per_epoch",
            "pretraining_seconds_per_epoch")  # fmt: skip
    table = _rows(groups, keys, head)
    by = {(r["setup"], r["method"]): r for r in table}
    old, new = "sigmoid + SGD", "ReLU + Adam"

    def acc(setup: str, method: str, key: str = "test_accuracy") -> float:
        return by[(setup, method)][key]

    def seeds_of(setup: str, method: str, key: str = "test_accuracy") -> list[float | None]:
        return [r[key] for r in groups[(setup, method)]]

    greedy, tuned, e2e = "greedy + fine-tune", "greedy_only_test_accuracy", "end to end"
    acceptable = {s: exceeds(seeds_of(s, greedy, tuned), seeds_of(s, e2e), margin=-0.05) for s in PRETRAIN_SETUPS}
    improves = {s: exceeds(seeds_of(s, greedy), seeds_of(s, greedy, tuned)) for s in PRETRAIN_SETUPS}
    helps = exceeds(seeds_of(old, greedy), seeds_of(old, e2e))
    needless = exceeds(seeds_of(new, e2e), seeds_of(new, greedy), margin=-0.01)
    cheaper = {s: exceeds(seeds_of(s, e2e, "seconds_per_epoch"), seeds_of(s, greedy, "pretraining_seconds_per_epoch"),
                          fmt=".2g") for s in PRETRAIN_SETUPS}
    claims = [
        claim("a greedy layer-by-layer solution, though not jointly optimal, is mostly acceptable (file 002): the "
              "greedy stages alone reach within 0.05 of end-to-end training",
              "; ".join(f"{s}: greedy only {acc(s, greedy, tuned):.3f}, end to end {acc(s, e2e):.3f} "
                        f"({acceptable[s].text})" for s in PRETRAIN_SETUPS),
              all(c.holds for c in acceptable.values())),
        claim("fine-tuning all layers jointly improves on the greedy solution",
              "; ".join(f"{s}: {acc(s, greedy, tuned):.3f} -> {acc(s, greedy):.3f} ({improves[s].text})"
                        for s in PRETRAIN_SETUPS),
              all(c.holds for c in improves.values())),
        claim(f"greedy pretraining helps a deep {old} network that is hard to train end to end (file 002)",
              f"test accuracy end to end {acc(old, e2e):.3f}, greedy + fine-tune {acc(old, greedy):.3f}; "
              f"difference {helps.text}", helps.holds),
        claim(f"with modern methods ({new}) end-to-end training no longer needs pretraining (section 7.8): within "
              "0.01 of (or above) greedy + fine-tune",
              f"end to end {acc(new, e2e):.3f}, greedy + fine-tune {acc(new, greedy):.3f}; difference "
              f"{needless.text}", needless.holds),
        claim("a greedy stage is cheaper than a joint epoch (file 002: far more efficient than solving jointly)",
              "; ".join(f"{s}: {by[(s, greedy)]['pretraining_seconds_per_epoch'] * 1e3:.0f} ms per "
                        f"pretraining epoch vs {by[(s, e2e)]['seconds_per_epoch'] * 1e3:.0f} ms end to end "
                        f"(seconds: {cheaper[s].text})" for s in PRETRAIN_SETUPS),
              all(c.holds for c in cheaper.values())),
    ]  # fmt: skip
    fig = plots.curves_figure(
        [plots.Panel({k: v for k, v in curves_by.items() if k.startswith(s)}, title=f"{s}: validation accuracy",
                     xlabel="epoch", ylabel="accuracy") for s in PRETRAIN_SETUPS],
        title=f"File 002: greedy pretraining ({depth} x {per_layer} epochs) + {finetune} fine-tuning vs {total} "
              f"epochs end to end, MLP {depth} x {width}",
    )  # fmt: skip
    notes = (
        f"Deep MLP, {depth} hidden layers of {width}, digits; both methods start from the same initial weights "
        f"(build_model with the seed) and train {total} epochs in all: greedy = {per_layer} epochs per layer "
        f"(lower layers frozen, a temporary linear head) then {finetune} epochs of joint fine-tuning. "
        + "; ".join(f"{k}: {v['optimizer']} {v['hparams']}" for k, v in PRETRAIN_SETUPS.items())
        + f". Seconds are wall-clock (not reproducible). Means over {len(seeds)} seed(s)."
    )  # fmt: skip
    return Result(table=table, claims=claims, figures={"curves": fig}, notes=notes)
