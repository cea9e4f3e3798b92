"""The spectrogram stage: Chunk -> Frame.

STFT (nfft/hop, configurable window) -> power -> frequency-bin reduction and
time resampling in the power domain -> dB -> dynamic-range normalisation.

Streaming: the STFT carries its overlap across chunk boundaries. Slice ``k`` of
a stream always starts at absolute sample ``k * hop`` (after the last
discontinuity), whatever the chunking, so a stream replayed in chunks gives the
same slices as one long transform; the samples a chunk leaves over (fewer than
``nfft``) open the next chunk's first slice. A gap, a jump in ``start_sample``
or a change of centre frequency or rate restarts the transform.

Axes of the Frame: slice ``i`` is centred on sample ``s_i + nfft/2``, and owns
``hop`` samples around its centre, so the rows of consecutive frames tile time
without gaps or overlap. Column ``c`` covers ``[f0 + c*df, f0 + (c+1)*df)``
with ``f0`` the lower edge of the lowest FFT bin (``fc - rate/2 - rate/(2*nfft)``).

Normalisation maps dB linearly onto [0, 1]: 0 is ``floor_offset_db`` below the
frame's median (the noise floor, for frames that are mostly noise) and 1 is
``dynamic_range_db`` above that. The models are trained on exactly this. The
median therefore lands at ``floor_offset_db / dynamic_range_db``, which the
Frame carries as ``noise_floor`` so that detectors need not measure it again.

Two kernels, one chosen at construction:

- **CPU (NumPy/SciPy)**: cache-blocked and single precision throughout. The
  image rows are grouped into blocks that each need at most ``block_slices``
  (64: 2 MB of complex64 STFT, which stays in cache) consecutive slices, and
  each block goes through window → complex64 FFT (pocketfft, one thread) →
  |X|² and frequency-bin sums → time resampling into its rows of the image →
  log while it is still in cache; ``workers`` threads take blocks from a shared
  counter. The whole-chunk STFT (64 MB at 20 MS/s) is never materialised. The
  buffers are allocated at construction and the block plan once per stream
  geometry; per chunk only the Frame's own image is new (a Frame outlives the
  call), plus each block's small time-resampling result (≤ 64 rows).
- **Array API (CuPy)**: one batched FFT over the whole chunk, then the same
  power/bin/time/normalise steps as whole-array ``xp`` calls (a GPU wants a few
  large kernels, not many small ones).

Both fold the fft-shift into the window: multiplying slice sample ``n`` by
``exp(2πi·(nfft//2)·n/nfft)`` (``(-1)^n`` for even ``nfft``) rotates the FFT's
output by half its length, so bins come out in ascending frequency with no
``roll``. Both fold the window's power normalisation into the window, so
``|X|²`` is already the per-bin power.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import scipy.sparse

from rfstream.config import SpectrogramConfig
from rfstream.dsp.backend import Backend, numpy_backend
from rfstream.errors import ConfigError
from rfstream.types import Chunk, Frame

__all__ = ["Spectrogrammer", "resample_matrix", "slice_flops"]

_TINY = 1e-20  # keeps the log finite on all-zero input (a muted SDR, zero padding)
# OpenBLAS runs a gemv on one thread below 2304*4 elements and wakes its pool above that; each
# bin-sum call stays below, so this stage uses exactly its own workers whatever BLAS is set to.
_GEMV_SINGLE_THREAD = 9216
_MAX_BLOCK_ROWS = 64  # image rows per block: the sparse product's small result stays in cache


def slice_flops(nfft: int) -> float:
    """The conventional cost of one complex FFT of ``nfft`` points: ``5·N·log2(N)`` flops."""
    return 5.0 * nfft * np.log2(nfft)


def resample_matrix(n_in: int, n_out: int) -> scipy.sparse.csr_matrix:
    """Sparse ``n_out x n_in`` matrix that resamples by exact area averaging.

    Each input cell is a piecewise-constant interval and each output cell the mean
    over its share of the input: downsampling averages (power per unit length is
    conserved), upsampling repeats. Applied as ``M @ x`` along rows.
    """
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    a, b = edges[:-1, None], edges[1:, None]
    span = int(np.ceil(n_in / n_out)) + 1  # input cells one output cell can touch
    idx = np.floor(a).astype(np.int64) + np.arange(span)[None, :]
    weight = np.minimum(b, idx + 1) - np.maximum(a, idx)
    keep = (weight > 1e-12) & (idx < n_in)
    rows = np.broadcast_to(np.arange(n_out)[:, None], idx.shape)[keep]
    vals = (weight[keep] * (n_out / n_in)).astype(np.float32)
    return scipy.sparse.csr_matrix((vals, (rows, idx[keep])), shape=(n_out, n_in))


@dataclass(frozen=True, slots=True)
class _Segment:
    """``count`` slices whose slice ``j`` starts at ``source[offset + j*hop]``; image slice ``first + j``."""

    source: Any  # 1-D complex64, contiguous, on xp
    offset: int
    count: int
    first: int


@dataclass(frozen=True, slots=True)
class _Block:
    """Image rows ``[r0, r1)``, area-averaged from slices ``[lo, hi)`` by ``matrix`` (rows x slices)."""

    r0: int
    r1: int
    lo: int
    hi: int
    matrix: scipy.sparse.csr_matrix


def _plan_blocks(n_slices: int, height: int, max_slices: int) -> tuple[_Block, ...]:
    """Group image rows into blocks that each need at most ``max_slices`` consecutive slices.

    Neighbouring blocks may share the one slice that straddles their boundary (it is computed
    by both: ``1 / max_slices`` more FFTs, against a cross-thread hand-over).
    """
    m = resample_matrix(n_slices, height)
    indptr, indices = m.indptr, m.indices
    blocks = []
    r0 = 0
    while r0 < height:
        lo, hi, r1 = int(indices[indptr[r0]]), int(indices[indptr[r0 + 1] - 1]) + 1, r0 + 1
        while r1 < height and r1 - r0 < _MAX_BLOCK_ROWS:
            nhi = int(indices[indptr[r1 + 1] - 1]) + 1
            if nhi - lo > max_slices:
                break
            hi, r1 = nhi, r1 + 1
        blocks.append(_Block(r0, r1, lo, hi, m[r0:r1, lo:hi].tocsr()))
        r0 = r1
    return tuple(blocks)


# The common windows are computed here, so that the spectrogram does not import scipy.signal
# (which brings scipy.stats: about 1.5 s of start-up); coefficients of scipy.signal.windows.
_COSINE_WINDOWS = {
    "hann": (0.5, 0.5),
    "hamming": (0.54, 0.46),
    "blackman": (0.42, 0.50, 0.08),
    "boxcar": (1.0,),
}


def window_values(name: Any, n: int) -> np.ndarray:
    """``scipy.signal.get_window(name, n, fftbins=True)`` (periodic, float64); scipy for the rare ones."""
    coeffs = _COSINE_WINDOWS.get(name) if isinstance(name, str) else None
    if coeffs is None or n < 2:
        import scipy.signal

        return np.asarray(scipy.signal.get_window(name, n, fftbins=True), dtype=np.float64)
    phase = 2.0 * np.pi * np.arange(n) / n  # periodic: n points of an (n + 1)-point symmetric window
    return sum(((-1.0) ** k) * a * np.cos(k * phase) for k, a in enumerate(coeffs)) + np.zeros(n)


class Spectrogrammer:
    """One stream's spectrogram stage. Set up once; ``process(chunk)`` per chunk.

    ``workers``: threads the CPU kernel uses (the calling thread is one of them); None takes
    ``backend.workers``. ``block_slices``: STFT slices per cache block on the CPU.
    ``normalise``: replaces the array kernel's power -> [0, 1] step (the GPU stage passes its
    fused kernel); the CPU kernel fuses its own.
    """

    def __init__(
        self,
        cfg: SpectrogramConfig | None = None,
        backend: Backend | None = None,
        *,
        workers: int | None = None,
        block_slices: int = 64,
        normalise: Callable[[Any], Any] | None = None,
    ):
        self.cfg = cfg = cfg or SpectrogramConfig()
        self.backend = backend or numpy_backend()
        xp = self.backend.xp
        self.xp = xp
        self.nfft, self.hop = cfg.nfft, cfg.hop
        try:
            window = window_values(cfg.window, cfg.nfft)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"config key 'spectrogram.window': {exc}") from exc
        # Scale so white noise of power p per sample reads p per bin (a PSD-like floor); folded
        # into the window as its square root, with the half-length rotation that fft-shifts.
        scale = 1.0 / np.sum(window**2)
        n = np.arange(cfg.nfft)
        shift = np.exp(2j * np.pi * (cfg.nfft // 2) * n / cfg.nfft)
        if cfg.nfft % 2 == 0:
            shift = np.where(n % 2 == 0, 1.0, -1.0)  # exactly +-1, not cos(pi*n) rounded
        self._window = (window * np.sqrt(scale) * shift).astype(np.complex64)
        self._dc = cfg.nfft // 2  # the DC bin's index once shifted
        # Natural log (several times faster than log10 in NumPy) with 10/ln(10) folded in.
        self._ln_scale = np.float32(10.0 / np.log(10.0) / cfg.dynamic_range_db)
        self._log_offset = np.float32(cfg.floor_offset_db / cfg.dynamic_range_db)
        self._floor_value = float(self._log_offset)  # where the median pixel lands: Frame.noise_floor
        # Frequency reduction, each column the total power of the bins it covers: k adjacent
        # bins summed where nfft = k * width (the squared re/im pairs through a mat-vec),
        # otherwise a sparse area-resampling matrix scaled from a mean to a sum.
        k = cfg.nfft // cfg.width
        self._bin_k = k if k >= 1 and cfg.nfft == k * cfg.width else 0
        self._freq_matrix = (
            None
            if self._bin_k
            else (resample_matrix(cfg.nfft, cfg.width).T * np.float32(cfg.nfft / cfg.width)).tocsr()
        )
        self._carry_buf = xp.zeros(self.nfft, dtype=xp.complex64)  # samples carried to the next chunk
        self._head = xp.zeros(3 * self.nfft, dtype=xp.complex64)  # carried + first samples of a chunk
        self.reset()
        if self.backend.name == "numpy":
            self._kernel: Any = _BlockedKernel(self, workers or self.backend.workers, block_slices)
        else:
            self._kernel = _ArrayKernel(self, normalise)

    def reset(self) -> None:
        """Forget the carried samples (a new stream, or a discontinuity)."""
        self._carry = 0  # samples carried from the last chunk (the head of the next slice)
        self._carry_start = 0  # absolute index of the first carried sample
        self._expect: tuple[int, float, float] | None = None  # (next start_sample, rate, fc)

    def close(self) -> None:
        """Stop the CPU kernel's worker threads (idempotent)."""
        self._kernel.close()

    @property
    def workers(self) -> int:
        """Host threads this stage runs on (1 for the array kernel: the device does the work)."""
        return int(self._kernel.workers)

    # --- streaming: which slices a chunk completes --------------------------------------------
    def _advance(self, iq: Any, chunk: Chunk) -> tuple[list[_Segment], int, int]:
        """The slices this chunk completes, as segments of samples on ``xp``; advances the stream.

        Slices that lie wholly in the chunk are read straight from it (a strided view, no
        copy); only the few that straddle the boundary with the carried samples are stitched.
        Returns ``(segments, n_slices, absolute start sample of slice 0)``.
        """
        xp, nfft, hop = self.xp, self.nfft, self.hop
        key = (chunk.start_sample, chunk.sample_rate_hz, chunk.center_freq_hz)
        if self._expect is None or chunk.gap_before_samples or key != self._expect:
            self._carry, self._carry_start = 0, chunk.start_sample
        c, n_new = self._carry, int(iq.shape[0])
        n_total, start = c + n_new, self._carry_start
        if n_total < nfft:
            # Not one whole slice yet (a stream shorter than nfft, a live source's tiny chunks):
            # carry the samples on and make no slice; process() gives an empty frame. Zero-padded
            # slices of noise made thousands of boxes (the chunk policy, docs/architecture.md).
            self._carry_buf[c:n_total] = iq
            self._carry = n_total
            self._expect = (chunk.start_sample + n_new, chunk.sample_rate_hz, chunk.center_freq_hz)
            return [], 0, start
        if n_new < nfft:
            # A short chunk (a tiny recording's only one, or a stream's last): stitch it whole,
            # zero-padding to one slice when even that is short.
            stream = xp.zeros(max(n_total, nfft), dtype=xp.complex64)
            stream[:c] = self._carry_buf[:c]
            stream[c:n_total] = iq
            n_slices = max(1, (n_total - nfft) // hop + 1) if n_total >= nfft else 1
            segments = [_Segment(stream, 0, n_slices, 0)]
        else:
            n_slices = (n_total - nfft) // hop + 1
            k_head = min(n_slices, -(-c // hop))  # slices that start inside the carried samples
            segments = []
            if k_head:
                need = (k_head - 1) * hop + nfft  # samples those slices span
                head = self._head[:need]
                head[:c] = self._carry_buf[:c]
                head[c:need] = iq[: need - c]
                segments.append(_Segment(head, 0, k_head, 0))
            if n_slices > k_head:
                segments.append(_Segment(iq, k_head * hop - c, n_slices - k_head, k_head))
        # Carry the samples the next chunk's first slice needs (always fewer than nfft). The
        # head segment already holds its own copy of the old carry.
        used = n_slices * hop
        left = n_total - used if n_total >= nfft else 0
        if left:
            self._carry_buf[:left] = iq[n_new - left :] if left <= n_new else stream[used:n_total]
        self._carry, self._carry_start = left, start + used
        self._expect = (chunk.start_sample + n_new, chunk.sample_rate_hz, chunk.center_freq_hz)
        return segments, n_slices, start

    def _samples(self, chunk: Chunk) -> Any:
        """The chunk's IQ on ``xp``, contiguous complex64 (the framing views assume both)."""
        return self.xp.ascontiguousarray(self.backend.to_device(chunk.iq), dtype=self.xp.complex64)

    def _normalise_in_place(self, image: Any, take_log: bool = True) -> Any:
        """(Power or) ln-power -> dB -> [0, 1] relative to the frame's noise floor, in place."""
        xp = self.xp
        if take_log:
            xp.maximum(image, np.float32(_TINY), out=image)
            xp.log(image, out=image)
        # Median of a strided sample: the noise floor for frames that are mostly noise.
        floor = xp.median(image[::3, ::3])
        image *= self._ln_scale
        image -= floor * self._ln_scale - self._log_offset
        xp.clip(image, 0.0, 1.0, out=image)
        return image

    # --- the stage ----------------------------------------------------------------------------
    def power(self, chunk: Chunk) -> tuple[Any, int]:
        """Full-resolution STFT power, ascending frequency, before any resizing.

        Returns ``(power[n_slices, nfft] float32, first_slice_start_sample)`` and advances the
        stream like ``process``. Used by the golden tests and by tools, not the hot path.
        """
        return self._kernel.power(chunk)

    def binned_power(self, chunk: Chunk) -> tuple[Any, int]:
        """The image before dB: ``(power[height, width] float32, first_slice_start_sample)``.

        Frequency bins summed, slices area-averaged onto the rows; advances the stream like
        ``process``. For the golden tests.
        """
        return self._kernel.image(chunk, take_log=False)

    def process(self, chunk: Chunk) -> Frame:
        """Chunk -> normalised Frame (height x width float32 in [0, 1])."""
        image, first, n_slices = self._kernel.frame_image(chunk)
        rate = chunk.sample_rate_hz
        if n_slices == 0:  # less than one FFT of samples so far: an empty frame, no detections
            return Frame(
                image=image,
                t0_s=chunk.start_sample / rate,
                dt_s=chunk.num_samples / rate / self.cfg.height,
                f0_hz=chunk.center_freq_hz - 0.5 * rate - 0.5 * rate / self.nfft,
                df_hz=rate / self.cfg.width,
                chunk=chunk,
                noise_floor=self._floor_value,
            )
        rate = chunk.sample_rate_hz
        return Frame(
            image=image,
            t0_s=(first + 0.5 * (self.nfft - self.hop)) / rate,
            dt_s=n_slices * self.hop / rate / self.cfg.height,
            f0_hz=chunk.center_freq_hz - 0.5 * rate - 0.5 * rate / self.nfft,
            df_hz=rate / self.cfg.width,
            chunk=chunk,
            noise_floor=self._floor_value,
        )


class _BlockedKernel:
    """The CPU kernel: window, FFT, |X|², bin sums, time resampling and log, fused per cache block."""

    def __init__(self, sp: Spectrogrammer, workers: int, block_slices: int) -> None:
        cfg = sp.cfg
        self.sp = sp
        self.workers = max(1, int(workers))
        self.block_slices = max(2, int(block_slices))
        nfft, width = cfg.nfft, cfg.width
        self._even = nfft % 2 == 0
        # For even nfft the shifted window is real: multiply the float32 (re, im) pairs by it
        # repeated twice (a plain float32 product, a third faster than a complex product).
        self._window2 = np.repeat(sp._window.real, 2) if self._even else None
        k = sp._bin_k
        if k:
            # Sum 2k squared floats per column, in gemv calls small enough to stay on one thread.
            per_call = max(1, min(width, _GEMV_SINGLE_THREAD // (2 * k)))
            while width % per_call:
                per_call -= 1
            self._gemv_rows = per_call
            self._ones = np.ones(2 * k, dtype=np.float32)
        b = self.block_slices
        # Per worker: the block's complex STFT, its binned power (and, off the k-bin path, the
        # block's full-resolution power).
        self._spec = [np.empty((b, nfft), dtype=np.complex64) for _ in range(self.workers)]
        self._binned = [np.empty((b, width), dtype=np.float32) for _ in range(self.workers)]
        self._power = [np.empty((0 if k else b, nfft), dtype=np.float32) for _ in range(self.workers)]
        self._plans: dict[int, tuple[_Block, ...]] = {}  # n_slices -> blocks (a stream has 1 or 2)
        self._pool = (
            ThreadPoolExecutor(self.workers - 1, thread_name_prefix="rfstream-spectrogram")
            if self.workers > 1
            else None
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _plan(self, n_slices: int) -> tuple[_Block, ...]:
        plan = self._plans.get(n_slices)
        if plan is None:
            if len(self._plans) > 8:  # rate changes: keep the cache small
                self._plans.clear()
            plan = self._plans[n_slices] = _plan_blocks(n_slices, self.sp.cfg.height, self.block_slices)
        return plan

    def _frames(self, segments: list[_Segment]) -> list[tuple[int, int, np.ndarray]]:
        """``(first slice, count, view)`` per segment: its slices as one strided view, no copy.

        For even nfft the view is of the float32 (re, im) pairs, for the real-window product.
        """
        nfft, hop = self.sp.nfft, self.sp.hop
        views = []
        for seg in segments:
            if self._even:
                src = seg.source[seg.offset :].view(np.float32)
                view = np.lib.stride_tricks.as_strided(src, shape=(seg.count, 2 * nfft), strides=(hop * 8, 4))
            else:
                src = seg.source[seg.offset :]
                view = np.lib.stride_tricks.as_strided(src, shape=(seg.count, nfft), strides=(hop * 8, 8))
            views.append((seg.first, seg.count, view))
        return views

    def _spectra(
        self, frames: list[tuple[int, int, np.ndarray]], lo: int, hi: int, out: np.ndarray
    ) -> np.ndarray:
        """Shifted complex spectra of slices ``[lo, hi)`` into ``out[:hi-lo]`` (windowed, FFT'd)."""
        sp = self.sp
        spec = out[: hi - lo]
        for first, count, view in frames:
            a, b = max(lo, first), min(hi, first + count)
            if a >= b:
                continue
            dst = spec[a - lo : b - lo]
            if self._even:
                np.multiply(view[a - first : b - first], self._window2, out=dst.view(np.float32))
            else:
                np.multiply(view[a - first : b - first], sp._window, out=dst)
        scipy.fft.fft(spec, axis=-1, workers=1, overwrite_x=True)  # in place; pocketfft keeps complex64
        if sp.cfg.remove_dc:
            spec[:, sp._dc] = spec[:, sp._dc + 1]  # the DC spike of zero-IF receivers reads as its neighbour
        return spec

    def _bin(self, spec: np.ndarray, out: np.ndarray, power_buf: np.ndarray) -> np.ndarray:
        """|X|² summed into the columns: ``out[:n]`` float32 (n slices), from the block's spectra."""
        n, width = spec.shape[0], self.sp.cfg.width
        binned = out[:n]
        pairs = spec.view(np.float32)
        np.square(pairs, out=pairs)
        if self.sp._bin_k:
            rows = self._gemv_rows
            stacked = pairs.reshape(n * width // rows, rows, -1)
            np.matmul(stacked, self._ones, out=binned.reshape(n * width // rows, rows))
        else:  # an uncommon geometry: the sparse product allocates its (small) result
            power = np.add(pairs[:, 0::2], pairs[:, 1::2], out=power_buf[:n])
            binned[...] = power @ self.sp._freq_matrix
        return binned

    def _run(self, segments: list[_Segment], n_slices: int, image: np.ndarray, take_log: bool) -> None:
        blocks = self._plan(n_slices)
        frames = self._frames(segments)
        counter = itertools.count()  # next() is atomic in CPython: workers take blocks in turn

        def work(w: int) -> None:
            spec_buf, bin_buf, power_buf = self._spec[w], self._binned[w], self._power[w]
            while (i := next(counter)) < len(blocks):
                blk = blocks[i]
                binned = self._bin(self._spectra(frames, blk.lo, blk.hi, spec_buf), bin_buf, power_buf)
                # CSR x dense is one pass of multiply-adds in C (no BLAS, GIL released); its
                # small result goes straight through the log into the image rows.
                rows = blk.matrix @ binned
                if take_log:
                    np.maximum(rows, np.float32(_TINY), out=rows)
                    np.log(rows, out=image[blk.r0 : blk.r1])
                else:
                    image[blk.r0 : blk.r1] = rows

        futures = [self._pool.submit(work, w) for w in range(1, self.workers)] if self._pool else []
        try:
            work(0)
        finally:
            for f in futures:
                f.result()

    def image(self, chunk: Chunk, take_log: bool) -> tuple[np.ndarray, int]:
        sp = self.sp
        segments, n_slices, first = sp._advance(sp._samples(chunk), chunk)
        if n_slices == 0:
            return np.zeros((sp.cfg.height, sp.cfg.width), dtype=np.float32), first
        image = np.empty((sp.cfg.height, sp.cfg.width), dtype=np.float32)  # the Frame's own
        self._run(segments, n_slices, image, take_log)
        return image, first

    def frame_image(self, chunk: Chunk) -> tuple[np.ndarray, int, int]:
        sp = self.sp
        segments, n_slices, first = sp._advance(sp._samples(chunk), chunk)
        if n_slices == 0:
            return np.zeros((sp.cfg.height, sp.cfg.width), dtype=np.float32), first, 0
        image = np.empty((sp.cfg.height, sp.cfg.width), dtype=np.float32)
        self._run(segments, n_slices, image, take_log=True)
        return sp._normalise_in_place(image, take_log=False), first, n_slices

    def power(self, chunk: Chunk) -> tuple[np.ndarray, int]:
        sp = self.sp
        segments, n_slices, first = sp._advance(sp._samples(chunk), chunk)
        out = np.empty((n_slices, sp.nfft), dtype=np.float32)
        buf, frames = self._spec[0], self._frames(segments)
        for lo in range(0, n_slices, self.block_slices):
            hi = min(n_slices, lo + self.block_slices)
            pairs = self._spectra(frames, lo, hi, buf).view(np.float32)
            np.square(pairs, out=pairs)
            np.add(pairs[:, 0::2], pairs[:, 1::2], out=out[lo:hi])
        return out, first


class _ArrayKernel:
    """Whole-chunk kernel on any ``xp`` (CuPy): one batched FFT, then whole-array steps."""

    workers = 1  # host threads: the device does the work

    def __init__(self, sp: Spectrogrammer, normalise: Callable[[Any], Any] | None) -> None:
        self.sp = sp
        xp = sp.xp
        self._window = xp.asarray(sp._window)
        self._pair_sum = xp.ones(2 * max(sp._bin_k, 1), dtype=xp.float32)
        self._freq_matrix = None if sp._bin_k else sp.backend.to_sparse(sp._freq_matrix)
        self._time_matrices: dict[int, Any] = {}  # n_slices -> (height x n_slices) matrix
        self._normalise = normalise or sp._normalise_in_place
        self._frames = xp.zeros((0, sp.nfft), dtype=xp.complex64)

    def close(self) -> None:
        pass

    def _stft(self, chunk: Chunk) -> tuple[Any, int]:
        sp, xp, be = self.sp, self.sp.xp, self.sp.backend
        segments, n_slices, first = sp._advance(sp._samples(chunk), chunk)
        if n_slices == 0:
            return xp.zeros((0, sp.nfft), dtype=xp.complex64), first
        if self._frames.shape[0] < n_slices:
            self._frames = xp.empty((n_slices, sp.nfft), dtype=xp.complex64)
        frames = self._frames[:n_slices]
        for seg in segments:
            view = be.as_strided(
                seg.source[seg.offset :], shape=(seg.count, sp.nfft), strides=(sp.hop * 8, 8)
            )
            xp.multiply(view, self._window, out=frames[seg.first : seg.first + seg.count])
        spec = be.fft(frames)
        if sp.cfg.remove_dc:
            spec[:, sp._dc] = spec[:, sp._dc + 1]
        return spec, first

    def power(self, chunk: Chunk) -> tuple[Any, int]:
        spec, first = self._stft(chunk)
        return spec.real**2 + spec.imag**2, first

    def _binned(self, chunk: Chunk) -> tuple[Any, int, int]:
        sp, xp = self.sp, self.sp.xp
        spec, first = self._stft(chunk)
        n_slices = spec.shape[0]
        if n_slices == 0:
            return xp.zeros((sp.cfg.height, sp.cfg.width), dtype=xp.float32), first, 0
        if sp._bin_k:
            pairs = spec.view(xp.float32)
            xp.square(pairs, out=pairs)
            binned = (pairs.reshape(-1, 2 * sp._bin_k) @ self._pair_sum).reshape(n_slices, sp.cfg.width)
        else:
            binned = (spec.real**2 + spec.imag**2) @ self._freq_matrix
        time_matrix = self._time_matrices.get(n_slices)
        if time_matrix is None:
            time_matrix = self._time_matrices[n_slices] = sp.backend.to_sparse(
                resample_matrix(n_slices, sp.cfg.height)
            )
        return xp.ascontiguousarray(time_matrix @ binned, dtype=xp.float32), first, n_slices

    def image(self, chunk: Chunk, take_log: bool) -> tuple[Any, int]:
        image, first, _ = self._binned(chunk)
        return image, first

    def frame_image(self, chunk: Chunk) -> tuple[Any, int, int]:
        image, first, n_slices = self._binned(chunk)
        if n_slices == 0:
            return image, first, 0
        return self._normalise(image), first, n_slices
