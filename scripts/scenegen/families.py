"""scenegen's fine labels -> the family written as ``core:label``: the one mapping table.

The families are the ones rfstream's detectors name (tone, am, fm, fsk, ook, psk,
ofdm, chirp, pulsed); scenegen does not import them, it only writes them. The fine
label always travels too, as ``scenegen:label``, so a scorer can map it another way.

Judgement calls, each one line to change:

- DSSS is scored as ``DSSS_FAMILY`` ("psk": a direct-sequence signal is a fast PSK
  signal to a spectrogram). If rfstream grows a ``dsss`` family, set it here.
- Morse (keyed carrier) is ``ook``: it is on-off keying, one annotation per word.
- DTMF-like dual tones are ``fsk`` (multi-frequency keying), one annotation per digit.
- GSM-like GMSK TDMA bursts are ``fsk`` (GMSK is continuous-phase FSK).
- Analog TV is ``am`` (the picture is vestigial-sideband AM; the FM sound carrier is
  part of the same emission and inside its box).
- LFM radar pulses, Barker-coded pulses and ADS-B replies are ``pulsed``; FMCW sweeps
  and LoRa-like chirps are ``chirp``.
- 4-level ASK is ``ook`` (amplitude keying).
"""

from __future__ import annotations

DSSS_FAMILY = "psk"

FAMILY: dict[str, str] = {
    # tones
    "cw": "tone",
    "cw_drift": "tone",
    # analog
    "am_dsb": "am",
    "am_dsb_sc": "am",
    "am_ssb_usb": "am",
    "am_ssb_lsb": "am",
    "analog_tv": "am",
    "nbfm_voice": "fm",
    "wbfm_broadcast": "fm",
    # frequency keying
    "fsk2": "fsk",
    "fsk4": "fsk",
    "fsk8": "fsk",
    "gfsk": "fsk",
    "gmsk": "fsk",
    "msk": "fsk",
    "fhss_gfsk": "fsk",
    "gsm_tdma": "fsk",
    "dtmf_like": "fsk",
    # amplitude keying
    "ook": "ook",
    "ook_pwm": "ook",
    "ook_manchester": "ook",
    "ask4": "ook",
    "cw_morse": "ook",
    # single carrier
    "bpsk": "psk",
    "qpsk": "psk",
    "oqpsk": "psk",
    "pi4dqpsk": "psk",
    "8psk": "psk",
    "16qam": "psk",
    "64qam": "psk",
    "256qam": "psk",
    "bpsk_gauss": "psk",
    "tdma_qpsk": "psk",
    "dsss_barker": DSSS_FAMILY,
    "dsss_pn": DSSS_FAMILY,
    # multi-carrier
    "ofdm_wifi": "ofdm",
    "ofdm_256": "ofdm",
    "ofdm_lte": "ofdm",
    "ofdm_dvb": "ofdm",
    "ofdm_nulls": "ofdm",
    "ofdm_tdd": "ofdm",
    # chirps and pulses
    "lora_css": "chirp",
    "fmcw_saw": "chirp",
    "fmcw_triangle": "chirp",
    "radar_rect": "pulsed",
    "radar_lfm": "pulsed",
    "radar_barker13": "pulsed",
    "adsb_ppm": "pulsed",
}
