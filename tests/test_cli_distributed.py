"""``optreg train CONFIG --nproc N``: the config's training on N local processes (optreg.train.distributed).

Oracles: the same command with one process (same config, same global batch: the same run up to the order
of float32 sums) and the store rows and files it leaves (one recorded run, written by rank 0 alone).
"""

from __future__ import annotations

import pytest

from optreg.cli import main
from optreg.report.store import RunStore

CONFIG = """
[data]
name = "digits"
[model]
hidden = [16]
[optimizer]
name = "adam"
lr = 0.01
[train]
batch_size = 64
epochs = 2
"""


def test_nproc_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path / "x.toml"), "--nproc", "0"])
    assert exit_info.value.code == 2
    assert "--nproc: must be an integer >= 1, got '0'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_on_two_processes_is_the_one_process_run(tmp_path, capfd):
    """2 gloo processes: exit 0, rank 0's output once, one run in the store, the files; the epochs' losses
    and accuracies those of the one-process command (float32 model: rel 1e-5)."""
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(CONFIG)
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        assert main(["train", str(cfg), "--out", str(out), "--nproc", str(nproc)]) == 0
        printed = capfd.readouterr().out
        assert printed.count("ddp (seed 0): finished") == 1, printed
        for name in ("curves.png", "table.csv", "table.md", "metrics.csv"):
            assert (out / "ddp" / "1" / name).is_file()  # the invocation's own folder
        with RunStore(out / "runs.sqlite") as store:
            (run,) = store.runs("train")
            runs[nproc] = (run, store.epochs(run["id"]))
    (one, one_epochs), (two, two_epochs) = runs[1], runs[2]
    assert two["status"] == "finished" and len(two_epochs) == len(one_epochs) == 2
    for a, b in zip(two_epochs, one_epochs):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert two["summary"]["test_accuracy"] == pytest.approx(one["summary"]["test_accuracy"], abs=1e-3)
