"""The one label taxonomy shared by `rfstream synth`, dataset export and the models.

A user's own labels map onto it with :func:`map_label` and an optional table
(``{"wifi": "ofdm", "bluetooth": "fsk"}``); anything unknown becomes ``unknown``.
"""

from __future__ import annotations

from collections.abc import Mapping

LABELS: tuple[str, ...] = (
    "tone",  # CW / unmodulated carrier
    "am",  # amplitude modulation (double sideband)
    "fm",  # narrowband FM
    "fsk",  # FSK / GFSK, including frequency-hopping bursts
    "ook",  # on-off keying / ASK
    "psk",  # single-carrier PSK / QAM
    "ofdm",  # multi-carrier (Wi-Fi / LTE-like)
    "chirp",  # LFM chirps
    "pulsed",  # short pulses (radar-like, ADS-B-like)
    "unknown",
)

# Common names users give their captures, folded onto the taxonomy.
ALIASES: dict[str, str] = {
    "cw": "tone",
    "carrier": "tone",
    "sine": "tone",
    "nfm": "fm",
    "wfm": "fm",
    "gfsk": "fsk",
    "bluetooth": "fsk",
    "ble": "fsk",
    "ask": "ook",
    "bpsk": "psk",
    "qpsk": "psk",
    "qam": "psk",
    "wifi": "ofdm",
    "lte": "ofdm",
    "dvb-t": "ofdm",
    "lfm": "chirp",
    "radar": "pulsed",
    "adsb": "pulsed",
    "ads-b": "pulsed",
    "mode-s": "pulsed",
}


def map_label(label: str, table: Mapping[str, str] | None = None) -> str:
    """Fold a free-form label onto the taxonomy (user table first, then aliases)."""
    key = label.strip().lower()
    if table and key in table:
        key = table[key].strip().lower()
    key = ALIASES.get(key, key)
    return key if key in LABELS else "unknown"
