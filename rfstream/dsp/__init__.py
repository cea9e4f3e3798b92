"""Signal processing: the array backend and the spectrogram stage."""
