"""Datasets for mini-batch training: embedded data, and the user's own files.

The chapter trains networks with mini-batch SGD on real data and tunes and early-stops them on a
held-out *validation* set (sections 7.6 and 7.7.3); :func:`load` therefore always returns three
fixed, seeded splits ``train / val / test``.

Built-in data, never downloaded:

- ``"digits"``: scikit-learn's embedded handwritten digits (:func:`sklearn.datasets.load_digits`),
  1797 images of 8x8 pixels, 10 classes. The pixel values are integers 0..16; they are divided by 16
  so features lie in [0, 1] (the 1/255 convention of MNIST). There is no official test set: test and
  validation sets are drawn from the seed.
- ``"mnist1d"``: MNIST-1D (Greydanus, 2020, "Scaling down deep learning"), 4000 training and 1000 test
  signals of length 40, 10 classes, *generated* by ``mnist1d.data.make_dataset`` with the package's
  default arguments (never its downloading ``get_dataset``), or with the arguments given as
  ``load("mnist1d", mnist1d={...})`` (the names of ``mnist1d.data.get_dataset_args``: ``num_samples``,
  ``train_split``, ``template_len``, ``padding``, ``scale_coeff``, ``max_translation``,
  ``corr_noise_scale``, ``iid_noise_scale``, ``shear_scale``, ``shuffle_seq``, ``final_seq_length``,
  ``seed``; :data:`MNIST1D_ARGS` holds their defaults). The generator already centres the data
  and scales it to unit standard deviation; the values are kept as they are. Generation takes a few
  seconds, so the result is cached in ``$OPTREG_CACHE`` (default ``~/.cache/optreg``) under a name
  derived from the arguments, written atomically; a corrupt cache file is regenerated. That cache is
  the only file this module writes on its own.

The user's own data (see :func:`load` for the rules):

- a directory of IDX files in the MNIST layout (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``), as distributed for
  MNIST and Fashion-MNIST; :func:`read_idx` / :func:`write_idx` read and write single IDX files;
- a ``.npz`` file with keys ``x_train, y_train, x_test, y_test`` (the layout of Keras' ``mnist.npz``)
  or ``x, y``;
- a ``.csv`` file, one sample per row, the last column the integer label, an optional header row
  (blank lines are skipped; an error names the line and column, counted from 1 as an editor does).

Features come back as ``float32`` tensors and labels as ``int64`` tensors. Scaling beyond the rules
above is the job of :mod:`optreg.data.preprocess` (fit it on ``train`` only).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from optreg._checks import check_int, check_range
from optreg.errors import OptregTypeError, OptregValueError, OptregWarning

__all__ = ["MNIST1D_ARGS", "Split", "Splits", "available", "check_mnist1d", "load", "read_idx", "write_idx"]

_BUILTIN = ("digits", "mnist1d")

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype (LeCun et al., MNIST page).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[str, int] = {dt.newbyteorder("=").str[1:]: code for code, dt in _IDX_DTYPES.items()}
_IDX_ALLOWED = "uint8, int8, int16, int32, float32, float64"

_CACHE_FORMAT = 1

#: MNIST-1D's generation arguments and their defaults (``mnist1d.data.get_dataset_args``, less its ``url``).
MNIST1D_ARGS: dict[str, Any] = {
    "num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": [36, 60], "scale_coeff": 0.4,
    "max_translation": 48, "corr_noise_scale": 0.25, "iid_noise_scale": 2e-2, "shear_scale": 0.75,
    "shuffle_seq": False, "final_seq_length": 40, "seed": 42,
}  # fmt: skip


class Split(NamedTuple):
    """One split of a dataset: features ``x`` (float32) and integer class labels ``y`` (int64)."""

    x: torch.Tensor
    y: torch.Tensor

    def __repr__(self) -> str:
        return f"Split(x=float32{list(self.x.shape)}, y=int64{list(self.y.shape)})"


class Splits(NamedTuple):
    """A dataset as fixed train / validation / test splits.

    ``input_shape`` is the shape of one sample (``(64,)`` for flattened digits, ``(1, 8, 8)`` with
    ``flatten=False``); ``n_classes`` is the number of classes; ``name`` names the source.
    """

    train: Split
    val: Split
    test: Split
    n_classes: int
    input_shape: tuple[int, ...]
    name: str

    def __repr__(self) -> str:
        return (
            f"Splits(name={self.name!r}, n_classes={self.n_classes}, input_shape={self.input_shape}, "
            f"train={len(self.train.y)}, val={len(self.val.y)}, test={len(self.test.y)})"
        )


def available() -> list[str]:
    """The names of the built-in datasets, all embedded or generated locally (nothing downloads)."""
    return list(_BUILTIN)


# ----------------------------------------------------------------------------------------------
# IDX files


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST format), plain or gzip-compressed, into a numpy array.

    The format: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian uint32
    dimensions, then the values in big-endian C order. Type codes: 0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. The array comes back in native byte order.

    Raises :class:`OptregValueError` naming the file for a missing file, a broken gzip stream, a bad
    magic number, or a size that does not match the header.
    """
    p = Path(path)
    if not p.is_file():
        raise OptregValueError(f"read_idx: {p}: no such file")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise OptregValueError(f"read_idx: {p}: corrupt gzip data ({exc})") from None
    if len(raw) < 4:
        raise OptregValueError(f"read_idx: {p}: file too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        magic = int.from_bytes(raw[:4], "big")
        raise OptregValueError(
            f"read_idx: {p}: bad IDX magic number 0x{magic:08X}; expected 0x0000TTNN with type TT in "
            "08, 09, 0B, 0C, 0D, 0E and NN >= 1 dimensions (is this an IDX file?)"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise OptregValueError(f"read_idx: {p}: truncated header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise OptregValueError(
            f"read_idx: {p}: the header announces shape {dims} ({expected} bytes) "
            f"but the file holds {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: Any) -> None:
    """Write an array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``); see :func:`read_idx`.

    Accepts numpy arrays and torch tensors of dtype uint8, int8, int16, int32, float32 or float64
    (IDX has no 64-bit integers: cast labels with ``.astype(np.uint8)`` first). The file is written
    atomically (temporary file, then :func:`os.replace`).
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=").str[1:] if arr.dtype.kind in "iuf" else arr.dtype.str
    if key not in _IDX_CODES:
        raise OptregValueError(
            f"write_idx: dtype {arr.dtype} cannot be stored in IDX; allowed: {_IDX_ALLOWED}"
        )
    if not 1 <= arr.ndim <= 255:
        raise OptregValueError(f"write_idx: IDX needs 1 to 255 dimensions, got an array of shape {arr.shape}")
    if any(d >= 2**32 for d in arr.shape):
        raise OptregValueError(f"write_idx: every dimension must be < 2**32, got shape {arr.shape}")
    code = _IDX_CODES[key]
    head = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = head + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    p = Path(path)
    if p.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    _atomic_write(p, payload)


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file next to ``path`` and move it into place with os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------
# validation of raw arrays


def _check_features(x: Any, where: str) -> np.ndarray:
    """Features as float32, shape (N, ...) with N >= 1, every value finite."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise OptregValueError(f"load: {where}: features must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise OptregValueError(
            f"load: {where}: features must have shape (n_samples, n_features, ...), got shape {x.shape}"
        )
    if x.shape[0] == 0 or x[0].size == 0:
        raise OptregValueError(f"load: {where}: no data (features of shape {x.shape})")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported below
        out = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise OptregValueError(
            f"load: {where}: features contain NaN or Inf ({int(bad.sum())} values, first at index {first}, "
            "after conversion to float32)"
        )
    return out


def _check_labels(y: Any, where: str) -> np.ndarray:
    """Labels as int64, shape (N,), integer-valued and >= 0."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise OptregValueError(f"load: {where}: labels must have shape (n_samples,), got shape {y.shape}")
    if y.dtype.kind in "iu":
        out = y.astype(np.int64)
    elif y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise OptregValueError(f"load: {where}: labels must be integers, got {y[i].item()} at index {i}")
        out = y.astype(np.int64)
    else:
        raise OptregValueError(f"load: {where}: labels must be integers, got dtype {y.dtype}")
    if out.size and out.min() < 0:
        i = int(np.argmin(out))
        raise OptregValueError(f"load: {where}: labels must be >= 0, got {out[i]} at index {i}")
    return out


def _check_pair(x: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    xf, yi = _check_features(x, where), _check_labels(y, where)
    if len(xf) != len(yi):
        raise OptregValueError(f"load: {where}: {len(xf)} samples but {len(yi)} labels")
    return xf, yi


# ----------------------------------------------------------------------------------------------
# sources: each returns (x_train, y_train, x_test or None, y_test or None)

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def _load_digits() -> _Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64), None, None


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("OPTREG_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "optreg"


def _mnist1d_args(options: Any) -> tuple[Any, dict[str, Any]]:
    """``mnist1d.data.get_dataset_args()`` with ``options`` applied (each checked), and the cache key."""
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise OptregTypeError(f"load: mnist1d must be a mapping of generation arguments, got {options!r}")
    owner = "load: mnist1d"
    for key, value in options.items():
        if key not in MNIST1D_ARGS:
            raise OptregValueError(
                f"{owner}: unknown generation argument {key!r} = {value!r}; allowed: {', '.join(MNIST1D_ARGS)}"
            )
        if key == "shuffle_seq":
            if not isinstance(value, bool):
                raise OptregValueError(f"{owner}: shuffle_seq must be true or false, got {value!r}")
        elif key == "padding":
            ok = isinstance(value, list | tuple) and len(value) == 2
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
            if not ok or value[0] > value[1]:
                what = "padding must be [low, high], integers 0 <= low <= high"
                raise OptregValueError(f"{owner}: {what}, got {value!r}")
            value = list(value)
        elif key == "train_split":
            value = check_range(owner, key, value, 0.0, 1.0, low_open=True, high_open=True)
        elif key in ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale"):
            value = check_range(owner, key, value, 0.0)
        else:
            value = check_int(owner, key, value, 0 if key in ("seed", "max_translation") else 1)
        setattr(args, key, value)
    n_train = int(args.num_samples // 10 * 10 * args.train_split)
    if n_train < 10 or args.num_samples // 10 * 10 - n_train < 10:
        raise OptregValueError(  # (the field first, "must ...", "got": the config's one style, see train.run)
            f"{owner}: num_samples must leave at least 10 training and 10 test signals with train_split = "
            f"{args.train_split} (it keeps num_samples // 10 * 10 of them), got {args.num_samples}"
        )
    key = {k: v for k, v in vars(args).items() if k != "url"}
    return args, key


def check_mnist1d(options: dict[str, Any] | None) -> dict[str, Any]:
    """MNIST-1D's generation arguments with ``options`` applied, each checked (nothing is generated)."""
    return _mnist1d_args(options)[1]


def _mnist1d_shapes(args: Any) -> dict[str, tuple[int, ...]]:
    """The array shapes make_dataset returns for ``args`` (it keeps ``(num_samples // 10) * 10`` signals)."""
    n = args.num_samples // 10 * 10
    n_train = int(n * args.train_split)
    length = args.final_seq_length
    return {"x": (n_train, length), "y": (n_train,), "x_test": (n - n_train, length), "y_test": (n - n_train,)}


def _open_npz(fh: Any, path: Path) -> np.lib.npyio.NpzFile:
    """``np.load`` on an open file (closed by the caller, even when numpy fails), refusing pickles."""
    f = np.load(fh, allow_pickle=False)
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise OptregValueError(f"load: {path}: not an .npz archive (a single .npy array?)")
    return f


def _read_mnist1d_cache(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or not a complete, valid cache."""
    try:
        with open(path, "rb") as fh, _open_npz(fh, path) as f:
            arrays = {k: np.array(f[k]) for k in shapes}
    except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile):
        return None
    for k, shape in shapes.items():
        a = arrays[k]
        if a.shape != shape or a.dtype.kind not in ("f" if k.startswith("x") else "iu"):
            return None
        if not np.isfinite(a).all():
            return None
    return arrays


def _generate_mnist1d(cache_dir: str | os.PathLike[str] | None, args: Any, key: dict[str, Any]) -> _Arrays:
    """MNIST-1D from ``make_dataset`` (cached); never ``get_dataset``, which downloads."""
    digest = hashlib.sha256(json.dumps([_CACHE_FORMAT, key], sort_keys=True).encode()).hexdigest()[:16]
    directory = _cache_dir(cache_dir)
    path = directory / f"mnist1d-{digest}.npz"
    arrays = _read_mnist1d_cache(path, _mnist1d_shapes(args))
    if arrays is None:
        import mnist1d.data

        # make_dataset reseeds the global `random` and `np.random` generators: put them back.
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        try:
            data = mnist1d.data.make_dataset(args)
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
        arrays = {
            "x": np.asarray(data["x"], dtype=np.float32),
            "y": np.asarray(data["y"], dtype=np.int64),
            "x_test": np.asarray(data["x_test"], dtype=np.float32),
            "y_test": np.asarray(data["y_test"], dtype=np.int64),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, buf.getvalue())
        except OSError as exc:
            warnings.warn(
                f"mnist1d: could not write the cache {path} ({exc}); it will be regenerated next time",
                RuntimeWarning,
                stacklevel=3,
            )
    return arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]


def _idx_file(directory: Path, prefix: str, kind: str) -> Path | None:
    """``{prefix}-{kind}-idxN-ubyte`` (or ``.idxN-ubyte``), plain preferred over ``.gz``."""
    found = sorted(directory.glob(f"{prefix}-{kind}[-.]idx[0-9]-ubyte")) + sorted(
        directory.glob(f"{prefix}-{kind}[-.]idx[0-9]-ubyte.gz")
    )
    return found[0] if found else None


def _load_idx_dir(directory: Path) -> _Arrays:
    layout = (
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    )
    files = {(p, k): _idx_file(directory, p, k) for p in ("train", "t10k") for k in ("images", "labels")}
    for kind in ("images", "labels"):
        if files["train", kind] is None:
            raise OptregValueError(
                f"load: {directory}: no train-{kind} IDX file (expected the MNIST layout: {layout}, "
                "each optionally .gz)"
            )
    if (files["t10k", "images"] is None) != (files["t10k", "labels"] is None):
        missing = "images" if files["t10k", "images"] is None else "labels"
        raise OptregValueError(
            f"load: {directory}: t10k-{missing} IDX file missing (the other t10k file is there)"
        )
    out: list[np.ndarray | None] = []
    for prefix in ("train", "t10k"):
        img, lab = files[prefix, "images"], files[prefix, "labels"]
        if img is None or lab is None:
            out += [None, None]
            continue
        x, y = read_idx(img), read_idx(lab)
        if x.ndim < 2:
            raise OptregValueError(f"load: {img}: images must have shape (n, ...), got shape {x.shape}")
        if y.ndim != 1:
            raise OptregValueError(f"load: {lab}: labels must have shape (n,), got shape {y.shape}")
        if len(x) != len(y):
            raise OptregValueError(f"load: {img.name} holds {len(x)} images but {lab.name} {len(y)} labels")
        out += [x, y]
    x_train, y_train, x_test, y_test = out
    assert x_train is not None and y_train is not None
    return x_train, y_train, x_test, y_test


def _load_npz(path: Path) -> _Arrays:
    try:
        with open(path, "rb") as fh, _open_npz(fh, path) as f:
            keys = set(f.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
            if {"x", "y"} <= keys:
                return f["x"], f["y"], None, None
    except OptregValueError:
        raise
    except ValueError as exc:  # object arrays (allow_pickle=False) or a broken archive
        why = (
            "it holds object arrays (pickled Python objects), which optreg does not load; save numeric arrays"
            if "allow_pickle" in str(exc)
            else "not a valid .npz archive"
        )
        raise OptregValueError(f"load: {path}: cannot read the .npz file: {why}") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise OptregValueError(f"load: {path}: not a valid .npz file ({exc})") from None
    raise OptregValueError(
        f"load: {path}: expected keys x_train, y_train, x_test, y_test or x, y; found {sorted(keys)}"
    )


def _numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def _load_csv(path: Path, n_classes: int | None) -> _Arrays:
    """Rows of numbers, the label last; every error names the line and column as an editor counts them
    (from 1). numpy parses (fast); where it fails, a scan finds the first bad cell for the message."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise OptregValueError(f"load: {path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    lines = [(no, line) for no, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise OptregValueError(f"load: {path}: empty file (expected one sample per row, label last)")
    if not _numbers(lines[0][1].split(",")):
        lines = lines[1:]  # a header row
    if not lines:
        raise OptregValueError(f"load: {path}: no data rows")
    first_no, first = lines[0]
    n_cols = len(first.split(","))
    if n_cols < 2:
        raise OptregValueError(
            f"load: {path}: need at least 2 columns (features, then the label), line {first_no} has {n_cols}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = np.loadtxt(io.StringIO("\n".join(line for _, line in lines)), delimiter=",", ndmin=2,
                               dtype=np.float64, comments=None)  # fmt: skip
    except ValueError:
        table = None
    if table is None or table.shape != (len(lines), n_cols):
        for no, line in lines:
            cells = line.split(",")
            if len(cells) != n_cols:
                raise OptregValueError(
                    f"load: {path}: line {no} has {len(cells)} columns, line {first_no} has {n_cols}"
                ) from None
            for col, cell in enumerate(cells, start=1):
                if not _numbers([cell]):
                    raise OptregValueError(f"load: {path}: line {no}, column {col}: {cell.strip()!r} is not a number")
        raise OptregValueError(f"load: {path}: cannot parse the CSV file") from None  # pragma: no cover
    x, y = table[:, :-1], table[:, -1]

    def at(i: int, col: int) -> str:
        return f"load: {path}: line {lines[i][0]}, column {col}"

    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise OptregValueError(f"{at(i, j + 1)}: {x[i, j]} is not a finite number")
    label = "(the label) = {}: {}"
    bad = ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        i = int(np.argmax(bad))
        raise OptregValueError(f"{at(i, n_cols)} {label.format(y[i], 'labels must be integers')}")
    if (y < 0).any():
        i = int(np.argmax(y < 0))
        raise OptregValueError(f"{at(i, n_cols)} {label.format(int(y[i]), 'labels must be >= 0')}")
    if n_classes is not None and (y >= n_classes).any():
        i = int(np.argmax(y >= n_classes))
        what = f"out of range for n_classes = {n_classes} (labels 0 to {n_classes - 1})"
        raise OptregValueError(f"{at(i, n_cols)} {label.format(int(y[i]), what)}")
    return x, y.astype(np.int64), None, None


# ----------------------------------------------------------------------------------------------
# splitting


def _split(
    y: np.ndarray, fraction: float, rs: np.random.RandomState, stratify: bool, what: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken): ``fraction`` of the samples taken, stratified by class when possible."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_take = max(1, round(fraction * n))
    if n_take >= n:
        raise OptregValueError(
            f"load: {where}: {n} sample(s) are too few for {what}={fraction:g} "
            "(no training sample would be left)"
        )
    counts = np.bincount(y)
    counts = counts[counts > 0]
    strat = stratify and counts.min() >= 2 and min(n_take, n - n_take) >= len(counts)
    keep, take = train_test_split(
        np.arange(n), test_size=n_take, random_state=rs, stratify=y if strat else None
    )
    return keep, take


def _resolve(name_or_path: Any) -> tuple[str, Path | None]:
    if isinstance(name_or_path, str) and name_or_path in _BUILTIN:
        return name_or_path, None
    if not isinstance(name_or_path, str | os.PathLike):
        raise OptregTypeError(f"load: name_or_path must be a dataset name or a path, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if not path.exists():
        if isinstance(name_or_path, str) and not path.suffix and len(path.parts) == 1:
            names = ", ".join(repr(n) for n in _BUILTIN)
            raise OptregValueError(
                f"load: unknown dataset {name_or_path!r}: expected one of {names}, or a path to an IDX "
                "directory (MNIST layout), a .npz or a .csv file"
            )
        raise OptregValueError(f"load: {path}: no such file or directory")
    if path.is_dir():
        return path.name, path
    if path.suffix.lower() not in (".npz", ".csv"):
        raise OptregValueError(
            f"load: {path}: unsupported file type {path.suffix!r}; "
            "expected .npz, .csv or a directory of IDX files"
        )
    return path.stem, path


def load(
    name_or_path: str | os.PathLike[str],
    seed: int = 0,
    *,
    val_fraction: float = 0.1,
    test_fraction: float | None = None,
    flatten: bool = True,
    stratify: bool = True,
    n_classes: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    mnist1d: dict[str, Any] | None = None,
) -> Splits:
    """Load a dataset as fixed, seeded train / validation / test splits.

    Args:
        name_or_path: ``"digits"`` or ``"mnist1d"`` (see :func:`available`), or a path: a directory of
            IDX files (MNIST layout), a ``.npz`` or a ``.csv`` file (see the module docstring).
        seed: the splits are a function of the seed only: the same seed gives the same splits.
        val_fraction: fraction of the training part held out for validation (0 for no validation set;
            the validation split is then empty). For MNIST-1D and files with an official test set the
            training part is the official training set; otherwise it is what is left after the test set.
        test_fraction: fraction of all samples held out for testing (default 0.2), for data without an
            official test set (digits, ``.npz`` with keys ``x, y``, ``.csv``, IDX without ``t10k`` files);
            refused for data that have one (MNIST-1D, ``x_test`` / ``t10k`` files), where it cannot apply.
        flatten: ``True`` gives ``(N, D)`` features for MLPs; ``False`` keeps the sample shape for
            CNNs: ``(N, 1, 8, 8)`` for digits, ``(N, 1, 40)`` for MNIST-1D, and ``(N, 1, H, W)`` for
            3-D image arrays ``(N, H, W)`` from IDX/npz files (other shapes are kept as stored).
        stratify: draw the held-out sets with the class proportions of the whole (falls back to a
            plain random draw when a class has fewer than 2 samples or a split is smaller than the
            number of classes).
        n_classes: the number of classes; labels must lie in ``[0, n_classes)``. Default: 10 for the
            built-in data, the largest label + 1 for files. A class without any example (in the
            training and test data together) gives an :class:`~optreg.errors.OptregWarning`: labels
            0, 1, 2 and one 7 are probably a typo, not 8 classes.
        cache_dir: where MNIST-1D is cached (default ``$OPTREG_CACHE`` or ``~/.cache/optreg``).
        mnist1d: MNIST-1D's generation arguments (see the module docstring and :data:`MNIST1D_ARGS`),
            each checked; refused for other data.

    Scaling: digits are divided by 16 (to [0, 1]); ``uint8`` images from IDX / npz files are divided by
    255 (to [0, 1]); everything else is kept as stored, converted to float32.

    Raises:
        OptregValueError: unknown name, missing file, bad IDX magic number, wrong shapes, features with
            NaN or Inf, labels that are not integers, negative or >= ``n_classes``, samples and labels
            of different lengths, or fractions out of range. The message names the file.
    """
    seed = check_int("load", "seed", seed)
    if seed >= 2**32:
        raise OptregValueError(f"load: seed must be an integer in [0, 2**32), got {seed}")
    val_fraction = check_range("load", "val_fraction", val_fraction, 0.0, 1.0, high_open=True)
    given_test_fraction = test_fraction is not None
    test_fraction = check_range(
        "load", "test_fraction", 0.2 if test_fraction is None else test_fraction, 0.0, 1.0,
        low_open=True, high_open=True,
    )  # fmt: skip
    if n_classes is not None:
        check_int("load", "n_classes", n_classes, 1)

    name, path = _resolve(name_or_path)
    where = name if path is None else str(path)
    if mnist1d is not None and name != "mnist1d":
        raise OptregValueError(f"load: mnist1d (generation arguments) applies to the mnist1d dataset only, not {where}")

    def official_test_set() -> None:
        if given_test_fraction:
            raise OptregValueError(
                f"load: {where}: test_fraction = {test_fraction:g} does not apply: these data have an official "
                "test set (leave test_fraction out)"
            )

    if path is None:
        if name == "digits":
            x, y, xt, yt = _load_digits()
        else:
            official_test_set()
            x, y, xt, yt = _generate_mnist1d(cache_dir, *_mnist1d_args(mnist1d))
        n_classes = 10 if n_classes is None else n_classes
    elif path.is_dir():
        x, y, xt, yt = _load_idx_dir(path)
    elif path.suffix.lower() == ".npz":
        x, y, xt, yt = _load_npz(path)
    else:
        x, y, xt, yt = _load_csv(path, n_classes)
    if xt is not None:
        official_test_set()

    images = path is not None and np.asarray(x).ndim == 3
    uint8 = path is not None and np.asarray(x).dtype == np.uint8
    x, y = _check_pair(x, y, f"{where} (training data)" if xt is not None else where)
    if xt is not None:
        xt, yt = _check_pair(xt, yt, f"{where} (test data)")
        if xt.shape[1:] != x.shape[1:]:
            raise OptregValueError(
                f"load: {where}: test samples have shape {xt.shape[1:]}, training samples {x.shape[1:]}"
            )
    if uint8:
        x = x / np.float32(255)
        xt = None if xt is None else xt / np.float32(255)

    top = int(max(y.max(), -1 if yt is None else yt.max()))
    if n_classes is None:
        n_classes = top + 1
    elif top >= n_classes:
        raise OptregValueError(f"load: {where}: label {top} is out of range for n_classes={n_classes}")
    counts = np.bincount(y if yt is None else np.concatenate([y, yt]), minlength=n_classes)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        warnings.warn(
            f"load: {where}: {len(empty)} of n_classes = {n_classes} classes have no example (class {shown}); "
            f"the labels found are {', '.join(map(str, np.flatnonzero(counts).tolist()[:20]))}. A typo in a "
            "label, or a wrong n_classes? (n_classes defaults to the largest label + 1 for a file)",
            OptregWarning,
            stacklevel=2,
        )

    rs = np.random.RandomState(seed)
    if xt is None or yt is None:
        keep, take = _split(y, test_fraction, rs, stratify, "test_fraction", where)
        x, y, xt, yt = x[keep], y[keep], x[take], y[take]
    if val_fraction > 0:
        keep, take = _split(y, val_fraction, rs, stratify, "val_fraction", where)
        x, y, xv, yv = x[keep], y[keep], x[take], y[take]
    else:
        xv, yv = x[:0], y[:0]

    def shape(a: np.ndarray) -> np.ndarray:
        if flatten:
            return a.reshape(len(a), int(np.prod(a.shape[1:])))
        if path is None or images:  # add the channel axis: (N, 1, 8, 8), (N, 1, 40), (N, 1, H, W)
            return a.reshape(len(a), 1, *a.shape[1:])
        return a

    def split(a: np.ndarray, b: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(shape(a), dtype=np.float32)), torch.from_numpy(b))

    train, val, test = split(x, y), split(xv, yv), split(xt, yt)
    return Splits(train, val, test, int(n_classes), tuple(train.x.shape[1:]), name)
