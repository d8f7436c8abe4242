"""optreg.data.load on digits (oracle: sklearn.datasets.load_digits) and on the user's own IDX, .npz and
.csv files written in tmp_path (oracle: the arrays written, read back through numpy / read_idx)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from optreg.data import Split, Splits, available, load, write_idx
from optreg.errors import OptregTypeError, OptregValueError, OptregWarning


def rows(*xs: torch.Tensor) -> np.ndarray:
    """All rows of the given splits, sorted lexicographically (a multiset of samples)."""
    a = np.concatenate([x.reshape(len(x), -1).numpy() for x in xs])
    return a[np.lexsort(a.T[::-1])]


def assert_same_splits(a: Splits, b: Splits) -> None:
    for sa, sb in zip(a[:3], b[:3]):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)


def test_available_lists_embedded_datasets():
    assert available() == ["digits", "mnist1d"]


def test_digits_shapes_dtypes_and_counts():
    s = load("digits")
    assert isinstance(s, Splits) and isinstance(s.train, Split)
    assert s.name == "digits" and s.n_classes == 10 and s.input_shape == (64,)
    # test: round(0.2 * 1797) = 359; validation: round(0.1 * (1797 - 359)) = 144
    assert (len(s.train.y), len(s.val.y), len(s.test.y)) == (1294, 144, 359)
    for split in s[:3]:
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (64,)
        assert set(split.y.unique().tolist()) == set(range(10))
    assert float(s.train.x.min()) == 0.0 and float(s.train.x.max()) == 1.0  # 0..16 divided by 16


def test_digits_splits_partition_sklearn_digits():
    """Oracle: sklearn's embedded digits; the three splits together are exactly its 1797 samples / 16."""
    s = load("digits", seed=3)
    ref = load_digits()
    ours = rows(*(torch.cat([sp.x, sp.y[:, None].float()], 1) for sp in s[:3]))
    theirs = np.concatenate([ref.data / 16.0, ref.target[:, None]], 1).astype(np.float32)
    np.testing.assert_array_equal(ours, theirs[np.lexsort(theirs.T[::-1])])


def test_digits_stratified_class_proportions():
    s = load("digits")
    full = np.bincount(load_digits().target, minlength=10) / 1797
    for split in s[:3]:
        counts = np.bincount(split.y.numpy(), minlength=10)
        assert np.all(np.abs(counts - full * len(split.y)) <= 1.0)


def test_same_seed_same_splits_other_seed_other_splits():
    assert_same_splits(load("digits", seed=5), load("digits", seed=5))
    a, b = load("digits", seed=0), load("digits", seed=1)
    assert not torch.equal(a.test.y, b.test.y) or not torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.val.x, b.val.x)


def test_digits_unflattened_keeps_image_shape():
    flat, img = load("digits", flatten=False), load("digits")
    assert img.input_shape == (64,) and flat.input_shape == (1, 8, 8)
    assert flat.train.x.shape == (1294, 1, 8, 8)
    assert torch.equal(flat.train.x.reshape(-1, 64), img.train.x)


def test_val_fraction_zero_gives_empty_validation_split():
    s = load("digits", val_fraction=0.0, test_fraction=0.5)
    assert s.val.x.shape == (0, 64) and s.val.y.shape == (0,)
    assert len(s.train.y) + len(s.test.y) == 1797 and len(s.test.y) == 898


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 1.0}, r"load: val_fraction must be in \[0, 1\), got 1.0"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"test_fraction": 0.0}, r"test_fraction must be in \(0, 1\)"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": 2**32}, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"seed": 1.5}, "seed"),
        ({"n_classes": 0}, "n_classes must be an integer >= 1"),
        ({"n_classes": 5}, "label 9 is out of range for n_classes=5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(OptregValueError, match=match):
        load("digits", **kwargs)


def test_unknown_name_and_missing_paths(tmp_path):
    with pytest.raises(
        OptregValueError, match="unknown dataset 'mnist': expected one of 'digits', 'mnist1d'"
    ):
        load("mnist")
    with pytest.raises(OptregValueError, match=r"missing\.npz: no such file or directory"):
        load(tmp_path / "missing.npz")
    with pytest.raises(OptregValueError, match="no such file"):
        load(str(tmp_path / "nothing"))
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(OptregValueError, match=r"unsupported file type '\.txt'"):
        load(tmp_path / "data.txt")
    with pytest.raises(OptregTypeError, match="name_or_path"):
        load(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- IDX directories (MNIST layout)


def mnist_like(rng: np.random.Generator, n: int, side: int = 5) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    y = np.arange(n, dtype=np.uint8) % 10
    return x, y


def write_mnist_dir(directory, x, y, xt=None, yt=None, gz=False) -> None:
    directory.mkdir(exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{ext}", x)
    write_idx(directory / f"train-labels-idx1-ubyte{ext}", y)
    if xt is not None:
        write_idx(directory / f"t10k-images-idx3-ubyte{ext}", xt)
        write_idx(directory / f"t10k-labels-idx1-ubyte{ext}", yt)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = mnist_like(rng, 100), mnist_like(rng, 30)
    write_mnist_dir(tmp_path / "fashion", x, y, xt, yt, gz=gz)
    s = load(tmp_path / "fashion", val_fraction=0.2)
    assert s.name == "fashion" and s.n_classes == 10 and s.input_shape == (25,)
    assert (len(s.train.y), len(s.val.y), len(s.test.y)) == (80, 20, 30)
    # the official test set is kept, in order; uint8 pixels are divided by 255
    np.testing.assert_allclose(s.test.x.numpy(), xt.reshape(30, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(s.test.y.numpy(), yt)
    np.testing.assert_allclose(
        rows(s.train.x, s.val.x), rows(torch.tensor(x.reshape(100, -1) / 255.0)), rtol=1e-6
    )
    img = load(tmp_path / "fashion", flatten=False)
    assert img.input_shape == (1, 5, 5) and img.test.x.shape == (30, 1, 5, 5)


def test_idx_directory_without_test_files_carves_a_test_set(tmp_path):
    x, y = mnist_like(np.random.default_rng(1), 50)
    write_mnist_dir(tmp_path / "d", x, y)
    s = load(tmp_path / "d", test_fraction=0.2, val_fraction=0.25)
    assert (len(s.train.y), len(s.val.y), len(s.test.y)) == (30, 10, 10)


def test_idx_directory_dot_names_as_in_some_mirrors(tmp_path):
    x, y = mnist_like(np.random.default_rng(2), 20)
    (tmp_path / "d").mkdir()
    write_idx(tmp_path / "d" / "train-images.idx3-ubyte", x)
    write_idx(tmp_path / "d" / "train-labels.idx1-ubyte", y)
    assert len(load(tmp_path / "d").train.y) + len(load(tmp_path / "d").val.y) == 16


def test_idx_directory_errors(tmp_path):
    rng = np.random.default_rng(3)
    x, y = mnist_like(rng, 20)
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(OptregValueError, match="no train-images IDX file .*MNIST layout"):
        load(d)
    write_idx(d / "train-images-idx3-ubyte", x)
    with pytest.raises(OptregValueError, match="no train-labels IDX file"):
        load(d)
    write_idx(d / "train-labels-idx1-ubyte", y[:19])
    with pytest.raises(OptregValueError, match="train-images-idx3-ubyte holds 20 images but .* 19 labels"):
        load(d)
    write_idx(d / "train-labels-idx1-ubyte", y)
    write_idx(d / "t10k-images-idx3-ubyte", x)
    with pytest.raises(OptregValueError, match="t10k-labels IDX file missing"):
        load(d)
    (d / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x02garbage")
    with pytest.raises(OptregValueError, match="t10k-labels-idx1-ubyte: bad IDX magic number|t10k-labels"):
        load(d)
    write_idx(d / "t10k-labels-idx1-ubyte", y.reshape(10, 2))
    with pytest.raises(OptregValueError, match=r"labels must have shape \(n,\)"):
        load(d)
    write_idx(d / "t10k-labels-idx1-ubyte", y)
    write_idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 255, size=(20, 4, 4), dtype=np.uint8))
    with pytest.raises(
        OptregValueError, match=r"test samples have shape \(4, 4\), training samples \(5, 5\)"
    ):
        load(d)


def test_idx_bad_magic_named(tmp_path):
    x, y = mnist_like(np.random.default_rng(4), 10)
    write_mnist_dir(tmp_path / "d", x, y)
    (tmp_path / "d" / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04" + bytes(100))
    with pytest.raises(OptregValueError, match="train-images-idx3-ubyte: bad IDX magic number 0x01020304"):
        load(tmp_path / "d")


# ---------------------------------------------------------------- .npz


def test_npz_official_split_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 3, 4)).astype(np.float64), rng.integers(0, 3, size=60)
    xt, yt = rng.normal(size=(15, 3, 4)), rng.integers(0, 3, size=15)
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    s = load(tmp_path / "mine.npz")
    assert s.name == "mine" and s.n_classes == 3 and s.input_shape == (12,)
    np.testing.assert_array_equal(s.test.x.numpy(), xt.reshape(15, 12).astype(np.float32))  # kept raw
    np.testing.assert_array_equal(s.test.y.numpy(), yt)
    np.testing.assert_array_equal(
        rows(s.train.x, s.val.x), rows(torch.tensor(x.reshape(60, 12), dtype=torch.float32))
    )
    assert load(tmp_path / "mine.npz", flatten=False).input_shape == (1, 3, 4)  # (N, H, W) images


def test_npz_x_y_layout_with_float_integer_labels(tmp_path):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(40, 5)), (np.arange(40) % 4).astype(np.float64)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    with pytest.warns(OptregWarning, match=r"2 of n_classes = 6 classes have no example \(class 4, 5\)"):
        s = load(tmp_path / "xy.npz", seed=2, n_classes=6)
    assert s.n_classes == 6 and s.test.y.dtype == torch.int64
    assert len(s.train.y) + len(s.val.y) + len(s.test.y) == 40
    assert load(tmp_path / "xy.npz", flatten=False).input_shape == (5,)
    assert_same_splits(load(tmp_path / "xy.npz", seed=2), load(tmp_path / "xy.npz", seed=2))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"a": np.zeros(3)}, r"expected keys x_train, y_train, x_test, y_test or x, y; found \['a'\]"),
        ({"x": np.zeros(10), "y": np.zeros(10)}, r"features must have shape \(n_samples, n_features, ...\)"),
        ({"x": np.zeros((10, 2)), "y": np.zeros((10, 1))}, r"labels must have shape \(n_samples,\)"),
        ({"x": np.zeros((10, 2)), "y": np.zeros(9)}, "10 samples but 9 labels"),
        (
            {"x": np.full((10, 2), np.nan), "y": np.zeros(10)},
            r"NaN or Inf \(20 values, first at index \[0, 0\]",
        ),
        ({"x": np.eye(10) * 1e300, "y": np.zeros(10)}, "NaN or Inf"),
        (
            {"x": np.zeros((10, 2)), "y": np.r_[np.zeros(9), 0.5]},
            "labels must be integers, got 0.5 at index 9",
        ),
        ({"x": np.zeros((10, 2)), "y": np.r_[np.zeros(9), -1]}, "labels must be >= 0, got -1 at index 9"),
        ({"x": np.zeros((10, 2)), "y": np.array(["a"] * 10)}, "labels must be integers, got dtype <U1"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, "no data"),
        ({"x": np.zeros((2, 2)), "y": np.zeros(2)}, r"1 sample\(s\) are too few for val_fraction=0.1"),
    ],
)
def test_npz_errors_name_the_file(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(OptregValueError, match="bad.npz") as info:
        load(path, test_fraction=0.5)
    assert info.match(match)


def test_npz_test_set_errors(tmp_path):
    z = np.zeros((10, 2))
    np.savez(tmp_path / "t.npz", x_train=z, y_train=np.zeros(10), x_test=z, y_test=np.full(10, np.inf))
    with pytest.raises(OptregValueError, match=r"t.npz \(test data\): labels must be integers, got inf"):
        load(tmp_path / "t.npz")
    np.savez(
        tmp_path / "t.npz", x_train=z, y_train=np.zeros(10), x_test=np.zeros((10, 3)), y_test=np.zeros(10)
    )
    with pytest.raises(OptregValueError, match=r"test samples have shape \(3,\), training samples \(2,\)"):
        load(tmp_path / "t.npz")


def test_npz_object_arrays_and_garbage_refused(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([[1, "a"]], dtype=object), y=np.zeros(1))
    with pytest.raises(OptregValueError, match="o.npz: cannot read"):
        load(tmp_path / "o.npz")
    (tmp_path / "g.npz").write_bytes(b"not a zip file")
    with pytest.raises(OptregValueError, match="g.npz: cannot read"):
        load(tmp_path / "g.npz")
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(OptregValueError, match="t.npz: not a valid .npz file"):
        load(tmp_path / "t.npz")
    with open(tmp_path / "a.npz", "wb") as fh:
        np.save(fh, np.zeros((3, 2)))
    with pytest.raises(OptregValueError, match=r"a.npz: not an .npz archive \(a single .npy array\?\)"):
        load(tmp_path / "a.npz")


# ---------------------------------------------------------------- .csv


@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(tmp_path, header):
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(30, 3)).round(4), np.arange(30) % 3
    table = np.column_stack([x, y])
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="a,b,c,label" if header else "", comments="")
    s = load(tmp_path / "t.csv", test_fraction=0.2)
    assert s.name == "t" and s.n_classes == 3 and s.input_shape == (3,)
    got = rows(*(torch.cat([sp.x.double(), sp.y[:, None].double()], 1) for sp in s[:3]))
    np.testing.assert_allclose(got, rows(torch.tensor(table)), rtol=1e-6)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty file"),
        ("a,b\n", "no data rows"),
        ("1\n2\n3\n", "need at least 2 columns .*line 1 has 1"),
        ("1,2,0\n3,x,1\n", "line 2, column 2: 'x' is not a number$"),
        ("a,b,label\n1,2,0\n\n3,4\n", "line 4 has 2 columns, line 2 has 3$"),
        ("1,2,0\n" * 3 + "1,nan,0\n", "line 4, column 2: nan is not a finite number$"),
        ("1,2,0\n3,4,1.5\n" * 3, r"line 2, column 3 \(the label\) = 1.5: labels must be integers$"),
        ("\n1,2,0\n3,4,-2\n" * 3, r"line 3, column 3 \(the label\) = -2: labels must be >= 0$"),
    ],
)
def test_csv_errors_name_the_file_line_and_column(tmp_path, text, match):
    """Lines and columns count from 1 as in an editor (blank lines and the header included); numpy's own
    text ("use `usecols`...") never reaches the message."""
    path = tmp_path / "broken.csv"
    path.write_text(text)
    with pytest.raises(OptregValueError, match="broken.csv") as info:
        load(path)
    assert info.match(match)
    assert "usecols" not in str(info.value) and "could not convert" not in str(info.value)


def test_csv_n_classes_refuses_an_out_of_range_label_and_warns_for_an_empty_class(tmp_path):
    """Labels 0..2 and one 7: without n_classes, 8 classes and a warning naming the 4 empty ones; with
    n_classes = 3, an error naming the line of the 7. Oracle: the file written."""
    rows_ = [f"{i},{i % 3}" for i in range(30)]
    rows_[17] = "17,7"
    (tmp_path / "typo.csv").write_text("x,label\n" + "\n".join(rows_) + "\n")
    with pytest.warns(OptregWarning, match=r"4 of n_classes = 8 classes have no example \(class 3, 4, 5, 6\)"):
        assert load(tmp_path / "typo.csv").n_classes == 8
    with pytest.raises(OptregValueError, match=r"typo.csv: line 19, column 2 \(the label\) = 7: out of range for "
                       r"n_classes = 3 \(labels 0 to 2\)"):  # fmt: skip
        load(tmp_path / "typo.csv", n_classes=3)


def test_test_fraction_is_refused_where_there_is_an_official_test_set(tmp_path):
    z = np.zeros((10, 2))
    np.savez(tmp_path / "t.npz", x_train=z, y_train=np.arange(10) % 2, x_test=z, y_test=np.arange(10) % 2)
    assert len(load(tmp_path / "t.npz", val_fraction=0.2).test.y) == 10
    with pytest.raises(OptregValueError, match="test_fraction = 0.3 does not apply: these data have an official test"):
        load(tmp_path / "t.npz", test_fraction=0.3)
    with pytest.raises(OptregValueError, match="mnist1d: test_fraction = 0.2 does not apply"):
        load("mnist1d", test_fraction=0.2)  # refused before generating anything
    with pytest.raises(OptregValueError, match="applies to the mnist1d dataset only"):
        load("digits", mnist1d={"shuffle_seq": True})


def test_tiny_data_without_stratification_still_splits(tmp_path):
    """A class with one sample cannot be stratified: the split falls back to a plain random draw."""
    np.savez(tmp_path / "tiny.npz", x=np.arange(12.0).reshape(6, 2), y=np.array([0, 0, 0, 1, 1, 2]))
    s = load(tmp_path / "tiny.npz", test_fraction=0.2, val_fraction=0.2)
    assert (len(s.train.y), len(s.val.y), len(s.test.y)) == (4, 1, 1)
    assert rows(s.train.x, s.val.x, s.test.x).tolist() == np.arange(12.0).reshape(6, 2).tolist()


# ---------------------------------------------------------------- MNIST-1D generation arguments
def test_mnist1d_generation_arguments_reach_make_dataset(tmp_path):
    """Oracle: mnist1d.data.make_dataset with the same arguments (a small set: 300 signals, shuffled
    sequences, more noise); the global RNGs are left alone, the cache is keyed by the arguments."""
    import random

    import mnist1d.data

    options = {"num_samples": 300, "shuffle_seq": True, "iid_noise_scale": 0.1, "seed": 3, "padding": [30, 50]}
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    s = load("mnist1d", mnist1d=options, cache_dir=tmp_path, val_fraction=0.0)
    assert (np.random.get_state()[1] == state).all()  # noqa: NPY002
    args = mnist1d.data.get_dataset_args()
    for k, v in options.items():
        setattr(args, k, v)
    py = random.getstate()
    ref = mnist1d.data.make_dataset(args)
    random.setstate(py)
    np.testing.assert_array_equal(s.test.x.numpy(), ref["x_test"].astype(np.float32))
    assert sorted(s.train.y.tolist()) == sorted(ref["y"].tolist()) and len(s.train.y) == 240
    default_files = len(list(tmp_path.iterdir()))
    load("mnist1d", mnist1d={**options, "seed": 4}, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == default_files + 1  # other arguments, another cache file


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"noise": 0.1}, "unknown generation argument 'noise' = 0.1; allowed: num_samples"),
        ({"shuffle_seq": 1}, "shuffle_seq must be true or false, got 1"),
        ({"padding": [60, 36]}, r"padding must be \[low, high\]"),
        ({"iid_noise_scale": -1.0}, "iid_noise_scale must be in"),
        ({"num_samples": 15}, "num_samples must leave at least 10 training and 10 test signals"),
        ({"train_split": 1.0}, r"train_split must be in \(0, 1\)"),
    ],
)
def test_mnist1d_bad_generation_arguments(tmp_path, options, match):
    with pytest.raises(OptregValueError, match=match):
        load("mnist1d", mnist1d=options, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before generating
