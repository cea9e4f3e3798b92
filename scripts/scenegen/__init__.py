"""scenegen: an independent generator of labelled wideband SigMF scenes, for judging rfstream.

It shares nothing with rfstream's own synthesiser (``rfstream/sources/synth.py``)
but the file format: its own waveforms (``waveforms.py``, about forty types), its
own impairments (``channel.py``), its own scene layouts and annotation rules
(``scene.py``), and SigMF written by hand. It imports nothing from rfstream (a
test checks), so a detector trained on rfstream's synthesiser meets signals here
that it has never seen. See docs/evaluation.md.

    python scripts/scenegen --seed 1 --rate 10e6 --duration 2 --out /tmp/scene1

or from Python (with ``scripts/`` on ``sys.path``)::

    from scenegen import generate_scene
    summary = generate_scene("/tmp/scene1", seed=1, sample_rate_hz=10e6, duration_s=2.0)
"""

__version__ = "1.0.0"

from .families import DSSS_FAMILY, FAMILY
from .scene import DENSITIES, LAYOUTS, SceneSummary, generate_scene
from .waveforms import MODULATIONS

__all__ = ["DENSITIES", "DSSS_FAMILY", "FAMILY", "LAYOUTS", "MODULATIONS", "SceneSummary", "generate_scene"]
