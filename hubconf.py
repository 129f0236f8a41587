"""torch.hub entry points: ``torch.hub.load("<owner>/longsep", "default")``.

Each returns a :class:`longsep.Separator` (Wiener EM over songs of any length, in bounded
memory): ``separator(audio)`` maps ``(batch, channels, samples)`` at ``separator.sample_rate``
to ``(batch, targets, channels, samples)``; ``separator.separate(waveform, rate)`` takes any
layout and rate. Keyword arguments are the inference settings of
``conf/inference/default.yaml`` (``niter``, ``segment``, ``device``, ...) and ``targets``.
"""

import sys
from pathlib import Path

dependencies = ["torch", "torchaudio", "numpy", "scipy", "safetensors", "yaml", "soundfile"]

_SRC = Path(__file__).resolve().parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:  # a clone that torch.hub made: not installed
    sys.path.insert(0, str(_SRC))


def _separator(model, targets=None, **options):
    from longsep.inference.separator import Separator

    return Separator.from_pretrained(model, targets, **options)


def default(targets=None, **options):
    """The model that ships with the package, ``umx_small_rendered``: four small
    UMX networks (vocals, drums, bass, other) trained on CPU on rendered General-MIDI songs
    at 16 kHz; a starting point, not Open-Unmix quality (``models/README.md``)."""
    from longsep.store import default_model

    return _separator(default_model(), targets, **options)


def umxhq(targets=None, **options):
    """Open-Unmix's published ``umxhq`` (MUSDB18-HQ), downloaded into torch hub's cache on
    first use and checked against the SHA-256 in its file names."""
    return _separator("umxhq", targets, **options)


def umxl(targets=None, **options):
    """Open-Unmix's published ``umxl`` (trained on extra data; its own license applies)."""
    return _separator("umxl", targets, **options)
