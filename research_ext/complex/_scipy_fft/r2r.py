"""Discrete cosine and sine transforms (types I-IV) in O(n log n) through torch's real FFT.

Every transform is written as copies, one real FFT (or its inverse) and products with constant
tables, so autograd differentiates it exactly (the adjoint of each step is analytic) to any order,
on any device. Normalization factors and scipy's ``orthogonalize`` corrections are folded into the
tables, so they cost nothing extra.

Products with constant tables are done in place on fresh tensors (autograd needs only the
constant for their backward), which saves an allocation per pass.

DCT-II pairs neighbours: with w_j = x[2j-1] + i x[2j] (x padded by its own end samples, one copy),
c_j = x[2j] + x[2j-1] and d_j = x[2j] - x[2j-1] form (1 - i) w_j = c_j + i d_j, whose inverse real
FFT s gives s[k] = C - S and s[n-k] = C + S for the cosine sums C = sum_j c_j cos(2 pi jk/n) and
sine sums S = sum_j d_j sin(2 pi jk/n); then y[k] = cos(phi) C - sin(phi) S with phi = pi k/2n,
that is y[m] = a_m s[m] + b_m s[n-m] with a, b = (cos phi_m +- sin phi_m) n/2 for every m: one
reversed copy and two products, no index gathers. DCT-III below 4096 points is its transpose,
step by step (type III is type II's transpose up to the weight of x[0]): the same two products and
reversed copy, a real FFT and a complex product, and the shifted copy back. Small inputs, longer
type III rows and the DST of types II and III keep Makhoul's (1980) reordering: one cached-index
gather on each side of the FFT (type III's inverse FFT unnormalized, 1/n in the twiddles; for even
n with a result buffer, no gathers: the input pairs are one reversed half and one complex-building
product, and the inverse FFT's output, moved by one through the twiddles, is written likewise into
the result viewed as complex pairs). Type IV uses the half-length complex FFT of
(x[2m] + i x[n-1-2m]) for even n; types I use the symmetric extension. The DST of each type is the DCT of the same type with sign flips and reversals. On CPU,
large batches run about 1 MiB of rows at a time so every pass stays in cache.
"""

import math

import torch

from research_ext.complex._shared.caching import cached, is_functorch_wrapped

__all__ = ["r2r_last"]


def _scale(kind: str, type: int, n: int, norm: str) -> float:
    """Overall factor of the forward transform for ``norm`` (scipy's definitions)."""
    if norm == "backward":
        return 1.0
    m = 2 * (n - 1) if (kind, type) == ("dct", 1) else 2 * (n + 1) if type == 1 else 2 * n
    return 1.0 / math.sqrt(m) if norm == "ortho" else 1.0 / m


@cached
def _twiddle(
    n: int, sign: float, factor: float, first: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Factor * exp(sign * i pi k / 2n) for k <= n/2, with entry 0 also multiplied by ``first``."""
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    tw = factor * torch.exp(sign * 1j * math.pi * k / (2 * n))
    tw[0] *= first
    return tw.to(dtype=dtype, device=device)


@cached
def _twiddle_shifted(
    n: int, factor: float, first: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``_twiddle(n, -1, ...)`` times exp(2 pi i k / n): the inverse FFT's output moves by one."""
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    tw = factor * torch.exp(-1j * math.pi * k / (2 * n)) * torch.exp(2j * math.pi * k / n)
    tw[0] *= first
    return tw.to(dtype=dtype, device=device)


@cached
def _cos2_tables(
    n: int, factor: float, ortho: bool, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DCT-II output products y = a * s + b * s[(n - m) % n].

    Entry 0 of ``a`` is the whole weight of y[0] (s[(n - 0) % n] = s[0]); ``b`` starts at m = 1.
    """
    # s comes from the unnormalized inverse FFT (norm="forward": no 1/n pass), n times the
    # backward-normalized s of the derivation.
    phi = math.pi * torch.arange(n, dtype=torch.float64) / (2 * n)
    a = 0.5 * factor * (torch.cos(phi) + torch.sin(phi))
    b = 0.5 * factor * (torch.cos(phi) - torch.sin(phi))
    a[0] = factor * (1 / math.sqrt(2) if ortho else 1.0)  # (a_0 + b_0) s[0]
    return a.to(dtype=dtype, device=device), b[1:].to(dtype=dtype, device=device)


@cached
def _cos3_tables(
    n: int, factor: float, ortho: bool, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DCT-III as the transpose of ``_cos2``'s steps, step by step.

    Input products u = a * x + b * x[(n - m) % n] (the weight of x[0] folded into a_0), then the
    spectrum product ``t``: the adjoint of the inverse real FFT's weights and of the (1 - i)
    rotation. Entries 0 and n/2 of ``t`` also fold in the adjoint of the end padding: rfft(u) is
    real there, so t_0 (imaginary) puts the whole weight of x[0] on the slot copied out, and
    t_{n/2} (real, even n) likewise for x[n-1]. ``b`` comes reversed, starting at m = 1.
    """
    phi = math.pi * torch.arange(n, dtype=torch.float64) / (2 * n)
    a = (n / 2) * (torch.cos(phi) + torch.sin(phi))
    b = (n / 2) * (torch.cos(phi) - torch.sin(phi))
    a[0] = n * (math.sqrt(2) / 2 if ortho else 0.5)  # (a_0 + b_0) times x[0]'s weight
    b_rev = b[1:].flip(0)  # b[(n - m) % n] for m >= 1
    half = n // 2 + 1
    weight = torch.full((half,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    t = factor * (1 + 1j) * weight / n
    t[0] = 1j * (t[0].real + t[0].imag)
    if n % 2 == 0:
        t[-1] = t[-1].real + t[-1].imag
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    return (
        a.to(dtype=dtype, device=device),
        b_rev.to(dtype=dtype, device=device),
        t.to(dtype=cdtype, device=device),
    )


@cached
def _type2_gathers(
    n: int, reverse: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input order [x0, x1, x3, ..., x4, x2] and output picks y[k] = Re p_k, y[n-k] = Im p_k."""
    gather_in = torch.cat(
        [
            torch.zeros(1, dtype=torch.long),
            torch.arange(1, n, 2),
            torch.arange(2, max(n, 2), 2).flip(0),
        ]
    )
    out = torch.empty(n, dtype=torch.long)
    k = torch.arange(n // 2 + 1)
    out[k] = 2 * k
    k = torch.arange(1, (n - 1) // 2 + 1)
    out[n - k] = 2 * k + 1
    return gather_in.to(device), (out.flip(0) if reverse else out).to(device)


@cached
def _type3_gathers(
    n: int, reverse: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved (X[k], X[n-k]) gather (b_0 is zeroed after it) and ``_type3``'s output order."""
    k = torch.arange(n // 2 + 1)
    a, b = k, (n - k) % n
    if reverse:
        a, b = n - 1 - a, n - 1 - b
    out = torch.empty(n, dtype=torch.long)
    m = torch.arange((n + 1) // 2)
    out[2 * m] = (-m) % n
    m = torch.arange(n // 2)
    out[2 * m + 1] = m + 1
    return torch.stack([a, b], -1).reshape(-1).to(device), out.to(device)


@cached
def _alternate(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return (1.0 - 2.0 * (torch.arange(n) % 2)).to(dtype=dtype, device=device)


@cached
def _dct4_tables(
    n: int, factor: float, dtype: torch.dtype, device: torch.device, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather index, pre- and post-twiddles and output index of the even-n type IV algorithm."""
    m = n // 2
    j = torch.arange(m, dtype=torch.float64)
    gather = torch.stack([torch.arange(0, n, 2), torch.arange(n - 1, 0, -2)], -1).reshape(-1)
    pre = torch.exp(-1j * math.pi * (4 * j + 1) / (4 * n))
    post = 2 * factor * torch.exp(-1j * math.pi * j / n)
    out = torch.empty(n, dtype=torch.long)
    out[0::2] = 2 * torch.arange(m)
    out[torch.arange(n - 1, -1, -2)] = 2 * torch.arange(m) + 1
    if reverse:
        out = out.flip(0)
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    return (
        gather.to(device),
        pre.to(dtype=cdtype, device=device),
        post.conj().to(dtype=cdtype, device=device),
        out.to(device),
    )


# Below this many elements index_select's lower fixed cost wins; above it gather's vectorized
# loop does (32 x 4096 float64: 95 us against 273 us; 1024 points: 6 us against 2.5 us).
_GATHER_MIN = 4096


def _take(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x[..., index]``, written to ``out`` when given."""
    if out is None and x.numel() <= _GATHER_MIN:
        return x.index_select(-1, index)
    return torch.gather(x, -1, index.expand(*x.shape[:-1], index.shape[0]), out=out)


def _cos2(
    x: torch.Tensor, factor: float, ortho: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    n = x.shape[-1]
    a, b = _cos2_tables(n, factor, ortho, x.dtype, x.device)
    # [x0, x0, x1, ..., x_{n-1}, x_{n-1}] (even n): pairs (x[2j-1], x[2j]) with the ends doubled.
    ends = (x[..., :1], x, x[..., -1:]) if n % 2 == 0 else (x[..., :1], x)
    h = torch.view_as_complex(torch.unflatten(torch.cat(ends, -1), -1, (-1, 2))).mul_(_ROTATE)
    s = torch.fft.irfft(h, n=n, norm="forward")  # (an FFT with out= copies its result)
    # Free the padded copy before the reversed one is made: the allocator hands its memory,
    # still in cache, back for it (a few % on a loaded machine; the figures are noisy).
    del h
    tail = s[..., 1:]
    if out is None:  # autograd, forward AD or torch.func: no out= and no writes into views
        return torch.cat([s[..., :1] * a[:1], tail * a[1:] + tail.flip(-1) * b], -1)
    # The result is written once, by the last product (the reversed copy is scaled in place).
    torch.addcmul(tail.flip(-1).mul_(b), tail, a[1:], out=out[..., 1:])
    torch.mul(s[..., :1], a[:1], out=out[..., :1])
    return out


def _cos3(
    x: torch.Tensor, factor: float, ortho: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    n = x.shape[-1]
    a, b_rev, t = _cos3_tables(n, factor, ortho, x.dtype, x.device)
    tail = x[..., 1:]
    if out is None:  # autograd, forward AD or torch.func: no writes into views
        u = torch.cat([x[..., :1] * a[:1], tail * a[1:] + tail.flip(-1) * b_rev], -1)
    else:  # u is built in ``out``: one buffer fewer in cache
        torch.addcmul(tail.flip(-1).mul_(b_rev), tail, a[1:], out=out[..., 1:])
        torch.mul(x[..., :1], a[:1], out=out[..., :1])
        u = out
    g = torch.view_as_real(torch.fft.rfft(u).mul_(t)).flatten(-2)[..., 1 : n + 1]
    return g if out is None else out.copy_(g)


def _type2(
    x: torch.Tensor, factor: float, ortho: bool, sine: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    n = x.shape[-1]
    if sine:
        x = x * _alternate(n, x.dtype, x.device)
    # Makhoul's v = [x0, x2, ..., x3, x1] read backwards cyclically, v'[m] = v[-m mod n] =
    # [x0, x1, x3, ..., x4, x2], has spectrum conj(V): then the tail y[n-k] = +Im p[k].
    tw = _twiddle(n, 1.0, 2.0 * factor, 1 / math.sqrt(2) if ortho else 1.0, _cplx(x), x.device)
    # Two gathers (vectorized, unlike the strided copies and flips they replace) and one FFT.
    gather_in, gather_out = _type2_gathers(n, sine, x.device)
    p = torch.fft.rfft(_take(x, gather_in)).mul_(tw)
    return _take(torch.view_as_real(p).flatten(-2), gather_out, out)


def _pairs_view(out: torch.Tensor) -> bool:
    """``out`` (even last dim) can be viewed as complex pairs along its last dim."""
    strides = out.stride()
    return (
        strides[-1] == 1 and out.storage_offset() % 2 == 0 and all(s % 2 == 0 for s in strides[:-1])
    )


def _type3_pairs(
    x: torch.Tensor, out: torch.Tensor, factor: float, first: float, rows: int = 0
) -> torch.Tensor:
    """Even-n DCT-III into ``out`` viewed as complex pairs; ``rows`` > 0: 2-D, that many at a time.

    The pairs (X[k], X[n-k]) for k >= 1 are x[1 : h + 1] + i x[n-1 : h-1 : -1]: one reversed half
    and one product that interleaves (cheaper than the input gather). y[2m] = v[-m], y[2m+1] =
    v[m+1]: with the twiddles shifting v by one, w[m] = v[m+1], the result viewed as complex is
    w[n-1-m] + i w[m], likewise (no output gather). Chunks share one spectrum buffer; entry 0 of
    the twiddles is the real ``factor * first``, so only the real part of z_0 is written per chunk
    (its imaginary part, which the inverse real FFT ignores, is zeroed once).
    """
    n = x.shape[-1]
    h = n // 2
    tw = _twiddle_shifted(n, factor, first, _cplx(x), x.device)[1:]
    step = min(rows, x.shape[0]) if rows else 0
    z = x.new_empty((step, h + 1) if rows else (*x.shape[:-1], h + 1), dtype=tw.dtype)
    z_parts = torch.view_as_real(z).select(-2, 0)
    z_parts.select(-1, 1).zero_()
    z_tail, z_first = z.narrow(-1, 1, h), z_parts.select(-1, 0)
    pairs = torch.view_as_complex(torch.unflatten(out, -1, (h, 2)))
    # Every chunk's views come from one split each (a few torch calls per chunk fewer).
    parts = (x.narrow(-1, 1, h), x.narrow(-1, h, h), x.select(-1, 0), pairs)
    chunks = zip(*(p.split(step) for p in parts), strict=True) if rows else [parts]
    for head, back, x0, ps in chunks:
        zs, tail, z0 = z, z_tail, z_first
        if rows and head.shape[0] < step:  # the last, shorter chunk
            r = head.shape[0]
            zs, tail, z0 = z[:r], z_tail[:r], z_first[:r]
        torch.complex(head, back.flip(-1), out=tail)
        tail.mul_(tw)
        torch.mul(x0, factor * first, out=z0)
        low, high = torch.fft.irfft(zs, n=n, norm="forward").split(h, -1)
        torch.complex(high.flip(-1), low, out=ps)
    return out


def _type3(
    x: torch.Tensor, factor: float, ortho: bool, sine: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    n, half = x.shape[-1], x.shape[-1] // 2 + 1
    first = math.sqrt(2) if ortho else 1.0
    if out is not None and not sine and n % 2 == 0 and _pairs_view(out):
        return _type3_pairs(x, out, factor, first)
    tw = _twiddle(n, -1.0, factor, first, _cplx(x), x.device)
    # Gather (a_k, b_k) = (X[k], X[n-k]) pairs, zero b_0, one inverse FFT, gather the output.
    gather_in, gather_out = _type3_gathers(n, sine, x.device)
    ab = torch.unflatten(_take(x, gather_in), -1, (half, 2))
    ab[..., 0, 1] = 0.0
    # Unnormalized (norm="forward"): torch's 1/n is a pass of its own, folded into ``tw`` here.
    v = torch.fft.irfft(torch.view_as_complex(ab).mul_(tw), n=n, norm="forward")
    if not sine:
        return _take(v, gather_out, out)
    return torch.mul(_take(v, gather_out), _alternate(n, x.dtype, x.device), out=out)


def _type4(x: torch.Tensor, factor: float, sine: bool) -> torch.Tensor:
    n = x.shape[-1]
    if sine:
        x = x * _alternate(n, x.dtype, x.device)
    if n % 2 == 0:
        gather, pre, post, out = _dct4_tables(n, factor, x.dtype, x.device, sine)
        z = torch.view_as_complex(torch.unflatten(x.index_select(-1, gather), -1, (n // 2, 2)))
        u = torch.fft.fft(z * pre).conj() * post  # conj: y[n-1-2k] = -Im
        return torch.view_as_real(u).flatten(-2).index_select(-1, out)
    # Odd n has no half-length split: use the length-2n complex FFT of the modulated input.
    k = torch.arange(n, dtype=torch.float64, device=x.device)
    pre = torch.exp(-1j * math.pi * k / (2 * n)).to(_cplx(x))
    post = (2 * factor * torch.exp(-1j * math.pi * (2 * k + 1) / (4 * n))).to(_cplx(x))
    y = (torch.fft.fft(x * pre, n=2 * n)[..., :n] * post).real
    return y.flip(-1) if sine else y


def _type1(x: torch.Tensor, factor: float, ortho: bool, sine: bool) -> torch.Tensor:
    n = x.shape[-1]
    if sine:
        zero = x.new_zeros((*x.shape[:-1], 1))
        ext = torch.cat([zero, x, zero, -x.flip(-1)], -1)
        return torch.fft.rfft(ext).imag[..., 1 : n + 1] * (-factor)
    if ortho:
        w = x.new_ones(n)
        w[0] = w[-1] = math.sqrt(2)
        x = x * w
    y = torch.fft.rfft(torch.cat([x, x[..., 1:-1].flip(-1)], -1)).real
    if ortho:
        return y * (factor / w)
    return y * factor


# (1 - i) (a + ib) = (a + b) + i(b - a): the neighbour sums and differences DCT-II needs.
_ROTATE = complex(1.0, -1.0)


def _cplx(x: torch.Tensor) -> torch.dtype:
    return torch.complex64 if x.dtype == torch.float32 else torch.complex128


def _rows(
    x: torch.Tensor, kind: str, type: int, norm: str, ortho: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The transform of every row of ``x``, written to ``out`` when given (no autograd then)."""
    factor = _scale(kind, type, x.shape[-1], norm)
    sine = kind == "dst"
    pairs = not sine and x.numel() >= _PAIRS_MIN
    if type == 2:
        return _cos2(x, factor, ortho, out) if pairs else _type2(x, factor, ortho, sine, out)
    if type == 3:
        pairs = pairs and x.shape[-1] < _PAIRS3_MAX_N
        return _cos3(x, factor, ortho, out) if pairs else _type3(x, factor, ortho, sine, out)
    y = _type1(x, factor, ortho, sine) if type == 1 else _type4(x, factor, sine)
    return y if out is None else out.copy_(y)


# DCT-II/III by neighbour pairs takes more (cheaper) passes than Makhoul's two gathers: on small
# inputs their fixed cost per op loses (one float64 row of 1024: 54 us against 24 us; 16 x 1024:
# 110 against 85); on 1 MiB chunks the pairs win (256 x 4096 float64, thread CPU / scipy's, rows
# in rotating order on a loaded machine: 1.23-1.26 against the gathers' 1.41). Every chunk below
# holds at least this.
_PAIRS_MIN = 1 << 16
# DCT-III's pairs (a forward real FFT between the transposed steps) against Makhoul's reordering
# around the unnormalized inverse FFT (no gathers with a result buffer), 2^20 float64 elements,
# thread CPU / scipy's, medians in rotating order on a loaded machine, one input per length (not
# in cache): n = 512: 1.01 against 1.30, 1024: 1.09 / 1.23, 2048: 1.03 / 1.18, 4096: 1.19 / 1.26,
# 8192: 1.23 / 1.25; 256 x 4096 alone with scipy (the input stays in the last-level cache, as in
# the benchmark), calls in random order: 1.41 / 1.23 and 1.50 / 1.32 in two runs of 300 rounds.
_PAIRS3_MAX_N = 4096

# Many rows are transformed about 1 MiB at a time: the gathers, FFT and twiddle product then run
# on data in cache instead of streaming the whole batch through memory four times, and each
# chunk's last op writes straight into the result (256 x 4096 float64 DCT-II on one CPU thread:
# 1.3x faster on a quiet machine, 2-3x on a busy one, where memory bandwidth is shared).
_CHUNK_BYTES = 1 << 20


def _is_plain(x: torch.Tensor) -> bool:
    """No autograd, forward-mode AD or torch.func transform to record: ``out=`` ops are safe."""
    return (
        not x.requires_grad
        and not is_functorch_wrapped(x)
        and torch.autograd.forward_ad._current_level < 0
    )


def r2r_last(x: torch.Tensor, kind: str, type: int, norm: str, ortho: bool) -> torch.Tensor:
    """Forward transform of real ``x`` along its last dim."""
    n = x.shape[-1]
    rows = max(1, _CHUNK_BYTES // max(1, n * x.element_size()))
    batch = x.numel() // max(1, n)
    plain = _is_plain(x)
    if x.device.type != "cpu" or batch < 2 * rows:
        if plain and kind == "dct" and type in (2, 3) and x.numel() >= _PAIRS_MIN:  # (pairs)
            return _rows(x, kind, type, norm, ortho, out=x.new_empty(x.shape))
        return _rows(x, kind, type, norm, ortho)
    flat = x.reshape(batch, n)
    starts = range(0, batch, rows)
    if not plain:
        parts = [_rows(flat[i : i + rows], kind, type, norm, ortho) for i in starts]
        return torch.cat(parts).reshape(x.shape)
    y = torch.empty_like(flat)
    if kind == "dct" and type == 3 and n % 2 == 0 and n >= _PAIRS3_MAX_N and _pairs_view(y):
        first = math.sqrt(2) if ortho else 1.0  # (what ``_rows`` picks for each chunk)
        return _type3_pairs(flat, y, _scale(kind, type, n, norm), first, rows).reshape(x.shape)
    for i in starts:
        _rows(flat[i : i + rows], kind, type, norm, ortho, out=y[i : i + rows])
    return y.reshape(x.shape)
