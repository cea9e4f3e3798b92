"""The ranges rfstream can serve, shared by the configuration and the input checks.

One place, so a sample rate that ``--rate`` refuses is refused in a SigMF file
too, and the reasons sit next to the numbers.
"""

from __future__ import annotations

MIN_SAMPLE_RATE_HZ = 1.0  # below this nothing is radio; times in seconds would lose meaning
MAX_SAMPLE_RATE_HZ = 1e12  # a thousand times the fastest SDR
MAX_ABS_FREQ_HZ = 1e15  # centre and edge frequencies (float64 still resolves 0.125 Hz there)
MAX_SAMPLE_INDEX = 1 << 53  # sample positions stay exact as floats (seconds = index / rate)
MAX_CHANNELS = 4096
MAX_CHUNK_SAMPLES = 1 << 26  # 512 MiB of complex64 in one chunk
MAX_NFFT = 1 << 20
MAX_IMAGE_SIDE = 4096  # spectrogram height/width: a 4096x4096 float32 frame is 64 MiB
MAX_CONFIG_BYTES = 1 << 20  # a TOML config file
MAX_META_BYTES = 256 << 20  # a SigMF metadata file (a million annotations fit in far less)
MAX_JSON_DEPTH = 64  # SigMF needs about 5 levels; extensions rarely a few more
