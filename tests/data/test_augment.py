"""optreg.data.augment against its oracles: torch.rot90 and torch.flip, shifted arrays written directly with
slicing, the closed form of a resampled linear image / ramp (bilinear interpolation is exact on linear
functions), the identity, and the statistics of Gaussian noise and of Bernoulli(p) selection."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optreg.data import load
from optreg.data.augment import (
    AddGaussianNoise,
    Compose,
    RandomAffine,
    RandomFlip,
    RandomRotation,
    RandomShift,
    RandomShift1d,
    RandomStretch,
    RandomZoom,
    as_batch_transform,
    compose,
)
from optreg.errors import OptregTypeError, OptregValueError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pixel_grid(h: int, w: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates relative to the image centre: x to the right, y down, each (h, w)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return x - (w - 1) / 2, y - (h - 1) / 2


def linear_image(h: int, w: int, a: float = 0.7, b: float = -0.4, c: float = 2.0) -> torch.Tensor:
    x, y = pixel_grid(h, w)
    return a * x + b * y + c


def inside(h: int, w: int, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Source positions (centred pixel coordinates) within the pixel centres: bilinear is exact there."""
    return (sx.abs() <= (w - 1) / 2 - 1e-9) & (sy.abs() <= (h - 1) / 2 - 1e-9)


# --------------------------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("angle, k", [(90, 1), (-90, -1), (180, 2), (270, 3)])
@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (3, 8, 8), (2, 1, 5, 5)])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 0.0), (torch.float64, 1e-12)])
def test_rotation_by_multiples_of_90_is_torch_rot90(angle, k, shape, dtype, atol):
    """Oracle torch.rot90(x, k, dims=(-2, -1)): a counterclockwise rotation by 90 k degrees of square images,
    bit for bit in float32 (resampled in float64 and rounded back), to 1e-12 in float64."""
    x = torch.rand(shape, generator=gen(), dtype=dtype)
    out = RandomRotation(degrees=(angle, angle))(x, gen(1))
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, torch.rot90(x, k, dims=(-2, -1)), atol=atol, rtol=0)


def test_rotation_of_a_linear_image_matches_the_closed_form_on_a_non_square_image():
    """Closed form: rotating f(x, y) = a x + b y + c by angle t gives f(R(t) p) at output pixel p (pixel
    coordinates, so the aspect ratio of a 12 x 17 image must not distort it); checked where R(t) p lies
    between pixel centres, where bilinear interpolation of a linear function is exact."""
    h, w = 12, 17
    img = linear_image(h, w)
    t = RandomRotation(degrees=(-40, 40))
    x = img.expand(6, 1, h, w)
    params = t.sample(x, gen(3))
    out = t.apply(x, params)
    px, py = pixel_grid(h, w)
    for i, deg in enumerate(params["angle"].tolist()):
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        sx, sy = c * px - s * py, s * px + c * py
        mask = inside(h, w, sx, sy)
        assert mask.sum() > 60
        expected = 0.7 * sx - 0.4 * sy + 2.0
        torch.testing.assert_close(out[i, 0][mask], expected[mask], atol=1e-10, rtol=0)


@pytest.mark.parametrize("axis, dim", [("horizontal", -1), ("vertical", -2)])
def test_flip_is_torch_flip(axis, dim):
    """Oracle torch.flip: with p=1 every image, with p=0.5 exactly those drawn (the others untouched)."""
    x = torch.rand(40, 3, 6, 7, generator=gen())
    torch.testing.assert_close(RandomFlip(p=1.0, axis=axis)(x, gen()), torch.flip(x, dims=(dim,)), atol=0, rtol=0)
    t = RandomFlip(p=0.5, axis=axis)
    params = t.sample(x, gen(2))
    out = t.apply(x, params)
    chosen = params["apply"]
    assert 0 < chosen.sum() < 40
    assert torch.equal(out[chosen], torch.flip(x[chosen], dims=(dim,)))
    assert torch.equal(out[~chosen], x[~chosen])


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``img`` (..., H, W) moved dy pixels down and dx right, zeros filling the vacated pixels (slicing)."""
    h, w = img.shape[-2:]
    out = torch.zeros_like(img)
    if abs(dy) < h and abs(dx) < w:  # otherwise everything moved out
        out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
            ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
    return out


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), m=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_integer_shift_is_exact_for_every_size(h, w, m, seed):
    """Property (oracle: slicing): odd and even sizes, shifts beyond the image included, bit for bit."""
    x = torch.rand(6, 2, h, w, generator=gen(seed))
    t = RandomShift(max_shift=m)
    params = t.sample(x, gen(seed + 1))
    out = t.apply(x, params)
    for i, (dy, dx) in enumerate(params["shift"].long().tolist()):
        assert torch.equal(out[i], shifted(x[i], dy, dx))


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 16), k=st.integers(-3, 3), seed=st.integers(0, 2**16))
def test_rotation_by_90_k_is_rot90_for_every_square_size(size, k, seed):
    """Property (oracle: torch.rot90, bit for bit): every square size, odd or even, and every quarter turn."""
    x = torch.rand(3, 1, size, size, generator=gen(seed))
    out = RandomRotation(degrees=(90 * k, 90 * k))(x, gen())
    assert torch.equal(out, torch.rot90(x, k, dims=(-2, -1)))


@pytest.mark.parametrize("shape", [(300, 2, 6, 7), (300, 6, 7)])
def test_integer_shift_is_the_shifted_array_with_zero_padding(shape):
    """Oracle: the array shifted by slicing (zero padding), bit for bit, for each example's own shift; the
    shifts are uniform on -2..2 (every value occurs among 300 draws)."""
    x = torch.rand(shape, generator=gen())
    t = RandomShift(max_shift=2)
    params = t.sample(x, gen(5))
    out = t.apply(x, params)
    shifts = params["shift"].long()
    for i in range(shape[0]):
        assert torch.equal(out[i], shifted(x[i], *shifts[i].tolist()))
    assert set(shifts.flatten().tolist()) == {-2, -1, 0, 1, 2}


def test_shift_per_axis_bounds():
    """max_shift=(0, 3): rows never move, columns move by -3..3."""
    x = torch.rand(200, 1, 5, 9, generator=gen())
    shifts = RandomShift(max_shift=(0, 3)).sample(x, gen())["shift"]
    assert torch.all(shifts[:, 0] == 0) and set(shifts[:, 1].tolist()) == set(range(-3, 4))


def test_real_valued_shift_matches_the_closed_form_on_a_linear_image():
    """Closed form: shifting f by s gives f(p - s) (bilinear, exact between pixel centres)."""
    h, w = 9, 11
    x = linear_image(h, w).expand(5, 1, h, w)
    t = RandomShift(max_shift=1.5, integer=False)
    params = t.sample(x, gen(7))
    out = t.apply(x, params)
    px, py = pixel_grid(h, w)
    for i, (dy, dx) in enumerate(params["shift"].tolist()):
        assert abs(dy) <= 1.5 and abs(dx) <= 1.5
        sx, sy = px - dx, py - dy
        mask = inside(h, w, sx, sy)
        torch.testing.assert_close(out[i, 0][mask], (0.7 * sx - 0.4 * sy + 2.0)[mask], atol=1e-10, rtol=0)


@pytest.mark.parametrize("zoom", [2.0, 0.5])
def test_zoom_matches_the_closed_form_on_a_linear_image(zoom):
    """Closed form: zooming by z about the centre gives f(p / z); z = 2 stays inside the image (all pixels
    checked), z = 0.5 reads outside it near the border, which is zero-padded."""
    h, w = 10, 10
    x = linear_image(h, w)[None, None]
    out = RandomZoom(scale=zoom)(x, gen())[0, 0]
    px, py = pixel_grid(h, w)
    sx, sy = px / zoom, py / zoom
    mask = inside(h, w, sx, sy)
    torch.testing.assert_close(out[mask], (0.7 * sx - 0.4 * sy + 2.0)[mask], atol=1e-10, rtol=0)
    if zoom > 1:
        assert mask.all()
    else:
        assert torch.equal(out[0, 0], torch.zeros((), dtype=out.dtype))  # the corner reads only padding


def test_affine_matches_the_closed_form_of_rotation_zoom_and_shift():
    """Closed form y(p) = f(R(t) (p - s) / z) with each example's own (t, z, s)."""
    h, w = 13, 11
    x = linear_image(h, w).expand(8, 1, h, w)
    t = RandomAffine(degrees=30, max_shift=(1.0, 2.0), scale=(0.8, 1.3))
    params = t.sample(x, gen(11))
    out = t.apply(x, params)
    px, py = pixel_grid(h, w)
    for i in range(8):
        deg, z = params["angle"][i].item(), params["zoom"][i].item()
        dy, dx = params["shift"][i].tolist()
        assert abs(deg) <= 30 and 0.8 <= z <= 1.3 and abs(dy) <= 1 and abs(dx) <= 2
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        qx, qy = (px - dx) / z, (py - dy) / z
        sx, sy = c * qx - s * qy, s * qx + c * qy
        mask = inside(h, w, sx, sy)
        torch.testing.assert_close(out[i, 0][mask], (0.7 * sx - 0.4 * sy + 2.0)[mask], atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "transform, shape",
    [
        (RandomRotation(0), (4, 3, 8, 8)),
        (RandomRotation(0), (4, 7, 5)),
        (RandomZoom(1.0), (4, 1, 8, 8)),
        (RandomShift(0), (4, 2, 6, 9)),
        (RandomShift(0, integer=False), (4, 2, 6, 9)),
        (RandomAffine(), (4, 1, 8, 8)),
        (RandomShift1d(0), (4, 40)),
        (RandomShift1d(0, integer=False), (4, 2, 40)),
        (RandomStretch(1.0), (4, 3, 40)),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 0.0), (torch.float64, 1e-12)])
def test_zero_rotation_unit_zoom_and_zero_shift_are_the_identity(transform, shape, dtype, atol):
    """Oracle: the identity (bit for bit in float32, to 1e-12 in float64), through the same grid_sample path
    as any other warp."""
    x = torch.randn(shape, generator=gen(), dtype=dtype)
    out = transform(x, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, x, atol=atol, rtol=0)


# --------------------------------------------------------------------------------------------- 1-D signals


@pytest.mark.parametrize("shape", [(200, 40), (200, 2, 40)])
def test_integer_time_shift_is_the_shifted_signal_with_zero_padding(shape):
    """Oracle: the signal shifted by slicing (zeros at the vacated end), bit for bit, per example."""
    x = torch.randn(shape, generator=gen())
    t = RandomShift1d(max_shift=3)
    params = t.sample(x, gen(4))
    out = t.apply(x, params)
    shifts = params["shift"][:, 1].long()
    assert torch.all(params["shift"][:, 0] == 0) and set(shifts.tolist()) == set(range(-3, 4))
    for i, s in enumerate(shifts.tolist()):
        assert torch.equal(out[i], shifted(x[i][..., None, :], 0, s)[..., 0, :])


def test_stretch_by_two_halves_the_slope_of_a_ramp():
    """Closed form: stretching x(t) = a t + b by 2 about c = (L - 1)/2 gives a (c + (t - c)/2) + b, a ramp of
    slope a/2 through the same centre value, over the whole signal."""
    length, a, b = 40, 0.5, 1.0
    t = torch.arange(length, dtype=torch.float64)
    ramp = (a * t + b).expand(3, 2, length)
    out = RandomStretch(scale=(2.0, 2.0))(ramp, gen())
    c = (length - 1) / 2
    torch.testing.assert_close(out, (a * (c + (t - c) / 2) + b).expand(3, 2, length), atol=1e-12, rtol=0)
    slope = out[..., 1:] - out[..., :-1]
    torch.testing.assert_close(slope, torch.full_like(slope, a / 2), atol=1e-12, rtol=0)


def test_compressing_a_ramp_doubles_its_slope_and_pads_the_ends():
    """Closed form for z = 0.5: a (c + 2 (t - c)) + b where c + 2 (t - c) lies in [0, L - 1], zeros beyond."""
    length, a, b = 41, 0.3, -2.0
    t = torch.arange(length, dtype=torch.float64)
    out = RandomStretch(scale=0.5)((a * t + b)[None], gen())[0]
    c = (length - 1) / 2
    src = c + 2 * (t - c)
    mask = (src >= 0) & (src <= length - 1)
    torch.testing.assert_close(out[mask], a * src[mask] + b, atol=1e-12, rtol=0)
    assert torch.all(out[:5] == 0) and torch.all(out[-5:] == 0)


# --------------------------------------------------------------------------------------------- noise and p


def test_gaussian_noise_has_the_requested_std():
    """Statistics: the added noise has mean 0 and std sigma; tolerances are 5 standard errors for m samples
    (sigma / sqrt(m) for the mean, sigma / sqrt(2 m) for the standard deviation)."""
    sigma, x = 0.3, torch.zeros(500, 1, 8, 8)
    noise = AddGaussianNoise(std=sigma)(x, gen()) - x
    m = noise.numel()
    assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(m)
    assert abs(noise.std().item() - sigma) < 5 * sigma / math.sqrt(2 * m)


@pytest.mark.parametrize(
    "transform",
    [AddGaussianNoise(0.5, p=0.3), RandomRotation(30, p=0.3), RandomFlip(p=0.3), RandomStretch((0.5, 0.9), p=0.3)],
    ids=repr,
)
def test_each_example_is_transformed_with_probability_p(transform):
    """Bernoulli(p) selection: the fraction of changed examples is p within 5 binomial standard errors, the
    changed ones are exactly those sampled, and the others are returned bit for bit."""
    n = 2000
    shape = (n, 1, 40) if isinstance(transform, RandomStretch) else (n, 1, 8, 8)
    x = torch.rand(shape, generator=gen()) + 1.0  # no zero pixel: every transformed example changes
    params = transform.sample(x, gen(9))
    out = transform.apply(x, params)
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, params["apply"])
    assert abs(changed.double().mean().item() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)
    assert torch.equal(out[~changed], x[~changed])


def test_p_zero_returns_the_input_and_p_one_transforms_all():
    x = torch.rand(20, 1, 8, 8, generator=gen()) + 1.0
    assert torch.equal(RandomRotation(30, p=0.0)(x, gen()), x)
    assert (RandomRotation((10, 30), p=1.0)(x, gen()) != x).flatten(1).any(1).all()


# --------------------------------------------------------------------------------------------- seeding


PIPELINE = compose(RandomAffine(15, 1.0, (0.9, 1.1)), RandomFlip(), RandomShift(1), AddGaussianNoise(0.1, p=0.5))


def test_same_generator_state_gives_the_same_batch_and_the_state_advances():
    x = torch.rand(64, 1, 8, 8, generator=gen())
    a, b = PIPELINE(x, gen(3)), PIPELINE(x, gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, PIPELINE(x, gen(4)))
    g = gen(3)
    first, second = PIPELINE(x, g), PIPELINE(x, g)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_a_generator_leaves_the_global_rng_alone():
    x = torch.rand(8, 1, 8, 8, generator=gen())
    state = torch.get_rng_state()
    PIPELINE(x, gen())
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(0)
    a = PIPELINE(x, None)
    torch.manual_seed(0)
    assert torch.equal(a, PIPELINE(x, None))  # without a generator: torch's global RNG, seeded


def test_the_input_is_not_modified():
    x = torch.rand(8, 1, 8, 8, generator=gen())
    before = x.clone()
    PIPELINE(x, gen())
    assert torch.equal(x, before)


# --------------------------------------------------------------------------------------------- composition


def test_compose_applies_in_order_with_one_generator():
    """Definition: Compose((a, b))(x, g) == b(a(x, g), g) for the same generator state; nesting flattens."""
    a, b, c = RandomRotation(20), RandomShift(2), AddGaussianNoise(0.2)
    x = torch.rand(16, 1, 8, 8, generator=gen())
    g = gen(8)
    expected = c(b(a(x, g), g), g)
    assert torch.equal(compose(a, b, c)(x, gen(8)), expected)
    assert compose(compose(a, b), c) == Compose((a, b, c))


def test_transforms_are_printable_picklable_and_compared_by_value():
    r = repr(PIPELINE)
    assert r.startswith("Compose(transforms=(RandomAffine(degrees=(-15.0, 15.0)") and "AddGaussianNoise(std=0.1" in r
    clone = pickle.loads(pickle.dumps(PIPELINE))
    assert clone == PIPELINE
    x = torch.rand(8, 1, 8, 8, generator=gen())
    assert torch.equal(clone(x, gen()), PIPELINE(x, gen()))
    with pytest.raises(AttributeError):
        RandomRotation(10).degrees = (0, 1)  # frozen


def test_digits_images_and_signals_keep_their_shape_dtype_and_labels():
    """The built-in layouts: digits (N, 1, 8, 8) with flatten=False, flat digits through as_batch_transform's
    shape, MNIST-1D-like signals (N, 1, 40)."""
    digits = load("digits", flatten=False).train
    x = digits.x[:100]
    out = PIPELINE(x, gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    flat = load("digits").train
    bt = as_batch_transform(PIPELINE, shape=(1, 8, 8))
    xb, yb = bt(flat.x[:100], flat.y[:100], gen())
    assert torch.equal(yb, flat.y[:100]) and xb.shape == (100, 64)
    assert torch.equal(xb, PIPELINE(flat.x[:100].reshape(100, 1, 8, 8), gen()).reshape(100, 64))
    signals = torch.randn(50, 1, 40, generator=gen())
    one_d = compose(RandomShift1d(3), RandomStretch((0.8, 1.2)), AddGaussianNoise(0.1))
    assert one_d(signals, gen()).shape == signals.shape


# --------------------------------------------------------------------------------------------- batch transform


def test_as_batch_transform_augments_inputs_only():
    t = RandomRotation(20)
    x, y = torch.rand(12, 1, 8, 8, generator=gen()), torch.arange(12)
    xb, yb = as_batch_transform(t)(x, y, gen(2))
    assert yb is y and torch.equal(xb, t(x, gen(2)))
    assert pickle.loads(pickle.dumps(as_batch_transform(t, shape=[1, 8, 8]))).shape == (1, 8, 8)


def test_as_batch_transform_refuses_a_transform_that_changes_the_batch_size():
    bt = as_batch_transform(lambda x, g: x[1:])
    with pytest.raises(OptregValueError, match=r"batch_transform: .* must keep the batch shape \(4, 3\), got \(3, 3\)"):
        bt(torch.zeros(4, 3), torch.zeros(4), None)
    with pytest.raises(OptregValueError, match=r"batch_transform: shape \(1, 8, 8\) does not fit examples of shape"):
        as_batch_transform(RandomFlip(), shape=(1, 8, 8))(torch.zeros(4, 63), torch.zeros(4))
    with pytest.raises(OptregValueError, match="batch_transform: shape must be a tuple of integers >= 1, got"):
        as_batch_transform(RandomFlip(), shape=(0, 8))
    with pytest.raises(OptregTypeError, match="batch_transform: transform must be callable"):
        as_batch_transform(3)


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: RandomFlip(p=1.5), r"random_flip: p must be in \[0, 1\], got 1.5"),
        (lambda: RandomRotation(15, p=-0.1), r"random_rotation: p must be in \[0, 1\], got -0.1"),
        (lambda: RandomRotation(-10), r"random_rotation: degrees must be a number >= 0 or a pair .*, got -10"),
        (lambda: RandomRotation((20, -20)), r"random_rotation: degrees must be .* low <= high, got \(20, -20\)"),
        (lambda: RandomRotation("15"), r"random_rotation: degrees must be .*, got '15'"),
        (lambda: RandomRotation(mode="bicubic"), r"random_rotation: mode must be one of 'bilinear', 'nearest'"),
        (lambda: RandomZoom((0.0, 1.2)), r"random_zoom: scale must be a number > 0 or a pair .*, got \(0.0, 1.2\)"),
        (lambda: RandomZoom(padding_mode="wrap"), r"random_zoom: padding_mode must be one of 'zeros'"),
        (lambda: RandomShift(-1), r"random_shift: max_shift must be an integer >= 0 .*, got -1"),
        (lambda: RandomShift(1.5), r"random_shift: max_shift must be an integer >= 0 .*\(integer=True\), got 1.5"),
        (lambda: RandomShift(1, integer=1), r"random_shift: integer must be true or false, got 1"),
        (lambda: RandomShift1d(math.inf, integer=False), r"random_shift1d: max_shift must be a number >= 0, got inf"),
        (lambda: RandomStretch((1.2, 0.8)), r"random_stretch: scale must be .*, got \(1.2, 0.8\)"),
        (lambda: RandomFlip(axis="diagonal"), r"random_flip: axis must be one of 'horizontal', 'vertical'"),
        (lambda: AddGaussianNoise(-0.1), r"add_gaussian_noise: std must be in \[0, inf\), got -0.1"),
        (lambda: Compose((RandomFlip(), 3)), r"compose: every transform must be callable"),
    ],
)
def test_bad_settings_name_the_field_and_the_value(build, message):
    with pytest.raises((OptregValueError, OptregTypeError), match=message):
        build()


@pytest.mark.parametrize(
    "transform, x, error, message",
    [
        (RandomRotation(10), torch.zeros(4, 64), OptregValueError, r"random_rotation: x must be a batch of images "
         r"\(N, C, H, W\) or \(N, H, W\), got shape \(4, 64\) \(reshape flat features first"),
        (RandomShift(1), torch.zeros(2, 1, 1, 8, 8), OptregValueError, r"random_shift: x must be a batch of images"),
        (RandomStretch(), torch.zeros(2, 1, 8, 8), OptregValueError, r"random_stretch: x must be a batch of signals "
         r"\(N, L\) or \(N, C, L\), got shape \(2, 1, 8, 8\)"),
        (RandomShift1d(), torch.zeros(40), OptregValueError, r"random_shift1d: x must be a batch of signals"),
        (RandomFlip(), torch.zeros(2, 8, 8, dtype=torch.long), OptregTypeError, r"random_flip: x must be a "
         r"floating-point tensor, got torch.int64"),
        (AddGaussianNoise(), [[0.0]], OptregTypeError, r"add_gaussian_noise: x must be a torch tensor, got list"),
    ],
)
def test_bad_batches_are_refused_clearly(transform, x, error, message):
    with pytest.raises(error, match=message):
        transform(x, gen())


def test_a_bad_generator_or_params_are_refused():
    x = torch.zeros(3, 1, 8, 8)
    with pytest.raises(OptregTypeError, match="random_rotation: generator must be a torch.Generator or None, got int"):
        RandomRotation(10)(x, 0)
    with pytest.raises(OptregTypeError, match="compose: generator must be a torch.Generator or None, got int"):
        compose(RandomFlip())(x, 0)
    with pytest.raises(OptregValueError, match=r"random_zoom: params must be a dict with keys \['apply', 'angle'"):
        RandomZoom().apply(x, {"apply": torch.ones(3, dtype=torch.bool)})
    params = RandomZoom().sample(x[:2], gen())
    with pytest.raises(OptregValueError, match=r"random_zoom: params\['apply'\] must be a tensor with one row per"):
        RandomZoom().apply(x, params)
