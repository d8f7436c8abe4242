"""read_idx / write_idx against the IDX format as specified on the MNIST page (LeCun, Cortes & Burges):
the oracle is the byte layout built by hand with struct, and gzip from the standard library."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from optreg.data import read_idx, write_idx
from optreg.errors import OptregValueError

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
BIG = {np.uint8: "B", np.int8: "b", np.int16: ">h", np.int32: ">i", np.float32: ">f", np.float64: ">d"}


def spec_bytes(values: list, shape: tuple[int, ...], dtype) -> bytes:
    """An IDX file written from the specification, value by value with struct."""
    head = bytes([0, 0, CODES[dtype], len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    return head + b"".join(struct.pack(BIG[dtype], v) for v in values)


@pytest.mark.parametrize("dtype", list(CODES))
def test_read_idx_matches_spec_layout(tmp_path, dtype):
    values = list(range(244, 256)) if dtype == np.uint8 else list(range(-3, 9))
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(spec_bytes(values, (2, 3, 2), dtype))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, np.array(values, dtype=dtype).reshape(2, 3, 2))


@pytest.mark.parametrize("dtype", list(CODES))
def test_write_idx_produces_spec_bytes(tmp_path, dtype):
    arr = np.arange(6, dtype=dtype).reshape(3, 2)
    write_idx(tmp_path / "b", arr)
    assert (tmp_path / "b").read_bytes() == spec_bytes(list(range(6)), (3, 2), dtype)


def test_gzip_round_trip_and_torch_input(tmp_path):
    arr = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte.gz", arr)
    raw = (tmp_path / "x-idx3-ubyte.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == spec_bytes(list(range(24)), (2, 3, 4), np.uint8)
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), arr.numpy())
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file behind


@settings(max_examples=40, deadline=None)
@given(
    data=st.sampled_from(list(CODES)).flatmap(
        lambda dt: arrays(dt, st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple))
    ),
    compress=st.booleans(),
)
def test_round_trip_property(tmp_path_factory, data, compress):
    path = tmp_path_factory.mktemp("idx") / ("f.gz" if compress else "f")
    write_idx(path, data)
    out = read_idx(path)
    assert out.dtype == data.dtype.newbyteorder("=") and out.shape == data.shape
    np.testing.assert_array_equal(out, data)


def test_read_idx_errors(tmp_path):
    with pytest.raises(OptregValueError, match="no such file"):
        read_idx(tmp_path / "missing")
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(OptregValueError, match=r"bad-magic: bad IDX magic number 0x00010801"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")  # unknown type code
    with pytest.raises(OptregValueError, match="bad IDX magic number"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(OptregValueError, match="bad IDX magic number"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(OptregValueError, match="too short"):
        read_idx(short)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(spec_bytes(list(range(6)), (3, 2), np.uint8)[:-1])
    with pytest.raises(OptregValueError, match=r"truncated: the header announces shape \(3, 2\)"):
        read_idx(truncated)
    header_only = tmp_path / "header"
    header_only.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 1))
    with pytest.raises(OptregValueError, match="truncated header"):
        read_idx(header_only)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(spec_bytes([1, 2], (2,), np.uint8))[:-6])
    with pytest.raises(OptregValueError, match="broken.gz: corrupt gzip"):
        read_idx(broken)


def test_write_idx_errors(tmp_path):
    with pytest.raises(OptregValueError, match="dtype int64 cannot be stored in IDX; allowed: uint8"):
        write_idx(tmp_path / "y", np.arange(3))
    with pytest.raises(OptregValueError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "y", np.uint8(3))
    with pytest.raises(OptregValueError, match="cannot be stored"):
        write_idx(tmp_path / "y", np.array(["a"]))
    assert not list(tmp_path.iterdir())
