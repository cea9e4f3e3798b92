"""The spectrogram stage: Chunk -> Frame.

STFT (nfft/hop, configurable window) -> power -> frequency-bin reduction and
time resampling in the power domain -> dB -> dynamic-range normalisation,
written once against the array API so NumPy and CuPy run the same code.

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
``dynamic_range_db`` above that. The models are trained on exactly this.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import scipy.signal
import scipy.sparse

from rfstream.config import SpectrogramConfig
from rfstream.dsp.backend import Backend, numpy_backend
from rfstream.errors import ConfigError
from rfstream.types import Chunk, Frame

_TINY = 1e-20  # keeps log10 finite on all-zero input (a muted SDR, zero padding)


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


class Spectrogrammer:
    """One stream's spectrogram stage. Set up once; ``process(chunk)`` per chunk."""

    def __init__(self, cfg: SpectrogramConfig | None = None, backend: Backend | None = None):
        self.cfg = cfg = cfg or SpectrogramConfig()
        self.backend = backend or numpy_backend()
        xp = self.backend.xp
        self.xp = xp
        self.nfft, self.hop = cfg.nfft, cfg.hop
        try:
            window = scipy.signal.get_window(cfg.window, cfg.nfft, fftbins=True)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"config key 'spectrogram.window': {exc}") from exc
        # Scale so white noise of power p per sample reads p per bin (a PSD-like floor).
        self._scale = np.float32(1.0 / np.sum(window.astype(np.float64) ** 2))
        self.window = xp.asarray(window.astype(np.float32))
        # Natural log (several times faster than log10 in NumPy) with 10/ln(10) folded in.
        self._ln_scale = np.float32(10.0 / np.log(10.0) / cfg.dynamic_range_db)
        self._log_offset = np.float32(cfg.floor_offset_db / cfg.dynamic_range_db)
        # Frequency reduction: k adjacent bins per column by a mat-vec on the squared
        # re/im pairs (one pass, no temporaries) where nfft = k * width and the halves
        # align; otherwise a sparse area-resampling matrix on the shifted power.
        k = cfg.nfft // cfg.width
        self._bin_k = k if cfg.nfft == k * cfg.width and cfg.width % 2 == 0 else 0
        self._pair_sum = xp.full(2 * max(k, 1), self._scale, dtype=xp.float32)
        self._freq_matrix = None if self._bin_k else self._sparse(resample_matrix(cfg.nfft, cfg.width).T)
        self._time_matrices: dict[int, Any] = {}  # n_slices -> (height x n_slices) matrix
        if self.backend.name == "cupy":
            from rfstream.dsp.gpu import log_normalise

            # One fused kernel for max/log10/scale/clip on the GPU; same arithmetic as below.
            self._normalise = functools.partial(
                log_normalise, dynamic_range_db=cfg.dynamic_range_db, floor_offset_db=cfg.floor_offset_db
            )
        else:
            self._normalise = self._normalise_in_place
        self._carry_buf = xp.zeros(self.nfft, dtype=xp.complex64)  # samples carried to the next chunk
        self._head = xp.zeros(3 * self.nfft, dtype=xp.complex64)  # carried + first samples of a chunk
        self._frames = xp.zeros((0, self.nfft), dtype=xp.complex64)
        self.reset()

    def _sparse(self, m: scipy.sparse.spmatrix) -> Any:
        return self.backend.to_sparse(m.tocsr())

    def reset(self) -> None:
        """Forget the carried samples (a new stream, or a discontinuity)."""
        self._carry = 0  # samples carried from the last chunk (the head of the next slice)
        self._carry_start = 0  # absolute index of the first carried sample
        self._expect: tuple[int, float, float] | None = None  # (next start_sample, rate, fc)

    # --- stages ---------------------------------------------------------------------------
    def _stft(self, chunk: Chunk) -> tuple[Any, int]:
        """Complex STFT (unshifted bins) of the slices this chunk completes; advances the stream.

        Slices that lie wholly in the chunk are read straight from it (a strided view, no
        copy); only the few that straddle the boundary with the carried samples are stitched.
        """
        xp, nfft, hop = self.xp, self.nfft, self.hop
        iq = self.backend.to_device(chunk.iq)
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
            return xp.zeros((0, nfft), dtype=xp.complex64), start
        if n_new < nfft:
            # A short chunk (a tiny recording's only one, or a stream's last): stitch it whole,
            # zero-padding to one slice when even that is short.
            stream = xp.zeros(max(n_total, nfft), dtype=xp.complex64)
            stream[:c] = self._carry_buf[:c]
            stream[c:n_total] = iq
            n_slices = max(1, (n_total - nfft) // hop + 1) if n_total >= nfft else 1
            parts = [(stream, 0, n_slices)]
        else:
            n_slices = (n_total - nfft) // hop + 1
            k_head = min(n_slices, -(-c // hop))  # slices that start inside the carried samples
            parts = []
            if k_head:
                need = (k_head - 1) * hop + nfft  # samples those slices span
                head = self._head[:need]
                head[:c] = self._carry_buf[:c]
                head[c:need] = iq[: need - c]
                parts.append((head, 0, k_head))
            parts.append((iq, k_head * hop - c, n_slices - k_head))
        if self._frames.shape[0] < n_slices:
            self._frames = xp.empty((n_slices, nfft), dtype=xp.complex64)
        frames = self._frames[:n_slices]
        row = 0
        for source, offset, count in parts:
            if count <= 0:
                continue
            item = source.itemsize
            view = self.backend.as_strided(source[offset:], shape=(count, nfft), strides=(hop * item, item))
            xp.multiply(view, self.window, out=frames[row : row + count])
            row += count
        spec = self.backend.fft(frames)
        if self.cfg.remove_dc:
            spec[:, 0] = spec[:, 1]  # the DC spike of zero-IF receivers reads as its neighbour
        # Carry the samples the next chunk's first slice needs (always fewer than nfft).
        used = n_slices * hop
        left = n_total - used if n_total >= nfft else 0
        if left:
            self._carry_buf[:left] = iq[n_new - left :] if left <= n_new else stream[used:n_total]
        self._carry, self._carry_start = left, start + used
        self._expect = (chunk.start_sample + n_new, chunk.sample_rate_hz, chunk.center_freq_hz)
        return spec, start

    def _normalise_in_place(self, image: Any) -> Any:
        """Power -> dB -> [0, 1] relative to the frame's noise floor, in place."""
        xp = self.xp
        xp.maximum(image, np.float32(_TINY), out=image)
        xp.log(image, out=image)
        # Median of a strided sample: the noise floor for frames that are mostly noise.
        floor = xp.median(image[::3, ::3])
        image *= self._ln_scale
        image -= floor * self._ln_scale - self._log_offset
        xp.clip(image, 0.0, 1.0, out=image)
        return image

    def power(self, chunk: Chunk) -> tuple[Any, int]:
        """Full-resolution STFT power, fft-shifted (ascending frequency), before any resizing.

        Returns ``(power[n_slices, nfft] float32, first_slice_start_sample)`` and advances the
        stream like ``process``. Used by the golden test and by tools, not the hot path.
        """
        spec, start = self._stft(chunk)
        power = (spec.real**2 + spec.imag**2) * self._scale
        return self.xp.fft.fftshift(power, axes=1), start

    def process(self, chunk: Chunk) -> Frame:
        """Chunk -> normalised Frame (height x width float32 in [0, 1])."""
        xp, cfg = self.xp, self.cfg
        spec, first = self._stft(chunk)
        n_slices = spec.shape[0]
        if n_slices == 0:  # less than one FFT of samples so far: an empty frame, no detections
            rate = chunk.sample_rate_hz
            return Frame(
                image=xp.zeros((cfg.height, cfg.width), dtype=xp.float32),
                t0_s=chunk.start_sample / rate,
                dt_s=chunk.num_samples / rate / cfg.height,
                f0_hz=chunk.center_freq_hz - 0.5 * rate - 0.5 * rate / self.nfft,
                df_hz=rate / cfg.width,
                chunk=chunk,
            )
        if self._bin_k:
            pairs = spec.view(xp.float32)
            xp.square(pairs, out=pairs)
            binned = (pairs.reshape(-1, 2 * self._bin_k) @ self._pair_sum).reshape(n_slices, cfg.width)
        else:
            power = (spec.real**2 + spec.imag**2) * self._scale
            binned = xp.fft.fftshift(power, axes=1) @ self._freq_matrix
        time_matrix = self._time_matrices.get(n_slices)
        if time_matrix is None:
            time_matrix = self._time_matrices[n_slices] = self._sparse(resample_matrix(n_slices, cfg.height))
        image = xp.ascontiguousarray(time_matrix @ binned, dtype=xp.float32)
        if self._bin_k:
            image = xp.roll(image, cfg.width // 2, axis=1)  # fftshift at the reduced width
        image = self._normalise(image)
        rate = chunk.sample_rate_hz
        return Frame(
            image=image,
            t0_s=(first + 0.5 * (self.nfft - self.hop)) / rate,
            dt_s=n_slices * self.hop / rate / cfg.height,
            f0_hz=chunk.center_freq_hz - 0.5 * rate - 0.5 * rate / self.nfft,
            df_hz=rate / cfg.width,
            chunk=chunk,
        )


def make_spectrogrammer(cfg: SpectrogramConfig, backend: Backend) -> Any:
    """The spectrogram stage for ``backend``: on CuPy, wrapped with pinned staging and its own stream."""
    if backend.name == "cupy":
        from rfstream.dsp.gpu import GpuSpectrogrammer

        return GpuSpectrogrammer(cfg, backend)
    return Spectrogrammer(cfg, backend)
