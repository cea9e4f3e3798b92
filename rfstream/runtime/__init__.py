"""Runtime services around the pipeline: logging, metrics, the watchdog."""
