"""Built-in synthetic multitrack data set in MUSDB18-HQ layout: no download needed.

Each song is composed from its seed: tempo, key, a four-chord progression per section
type, a form of recurring sections (intro / verse / chorus / bridge / outro) in which the
stems enter and leave, and one timbre per instrument. Every section type is rendered once
and placed at each of its occurrences, so a section recurs sample-identically (except in
its first :data:`TAIL_SECONDS`, where the previous section rings over): the long-range
repetition that the sequence-length study probes. Stems, each ``(samples, 2)`` float32
(musdb orientation):

- ``drums``:  synthesized kick, snare, hi-hats and crash in a groove per section type,
- ``bass``:   wavetable bass (E1..E3) on the chord roots, with passing notes,
- ``other``:  chords, plucked (bright-to-dull wavetable) or pad (detuned saws),
- ``vocals``: a sung melody: harmonic source with spectral tilt through vowel formants,
  note glides, delayed vibrato, consonant noise and phrase pauses.

``mixture`` is the float32 sum of the four stems; one gain per song keeps every peak at or
below :data:`PEAK`.

Long-context controls (``control=``, default ``none``: the songs above). ``positive``: a
*distractor*, a second sung melody in ``other`` from the vocals' synthesizer with its own
timbre, register, level and melodies drawn from the vocals' distributions, sings wherever
the vocals do, so no instant tells which voice is the target. Only a ``solo`` section
(>= :data:`SOLO_SECONDS`, vocals without the distractor) at the start or the end (drawn
per song) does, and a ``break`` of >= :data:`GAP_SECONDS` without either voice separates
it from every section where both sing: a model must look that far to pick the target.
:class:`ControlDesign` (``solo_seconds``, ``gap_seconds``, ``distractor_register``,
``accompaniment``, ``negative``, ``compact``) changes that layout; its ``opposite`` register
puts the distractor in the vocals' other register, ``accompaniment=False`` leaves the two
singers alone, ``compact`` makes songs barely longer than the solo, the break and one body
section. ``negative``: the same songs with the ``solo`` samples cut out (a shorter song,
otherwise sample-identical), or with ``negative="muted"`` the solo's voice taken out in
place (the same length). Track names end in `` (positive)`` / `` (negative)``; the manifest
records ``control``, ``distractor_voice`` and the negative's ``removed`` section.

Layout written by :func:`generate_dataset`::

    DIR/train/<track>/{mixture,vocals,drums,bass,other}.wav   training and validation songs
    DIR/test/<track>/{mixture,vocals,drums,bass,other}.wav    test songs
    DIR/setup.yaml   musdb setup file naming the validation songs
    DIR/synth.json   manifest, written last: present and matching means complete
    DIR/.synth-content.json   parameters the track folders were made with (for resuming)

Read it with ``musdb.DB(root=DIR, is_wav=True, subsets=..., split=...,
setup_file="setup.yaml")``; without ``setup_file`` musdb uses the MUSDB18 validation
names, so ``split='valid'`` is empty and ``split='train'`` holds the validation songs too.
With ``subtype="PCM_16"`` (default) the stems are put on the 16-bit grid before summing, so
``mixture`` is the exact sum of the stems as read by soundfile *and* by musdb (which decodes
through ffmpeg as 16-bit); ``"FLOAT"`` files hold :func:`generate_song`'s arrays unchanged.
"""

from longsep.data.synth.dataset import (
    FILES,
    MANIFEST,
    SETUP_FILE,
    SynthParams,
    TrackJob,
    ensure_dataset,
    generate_dataset,
    is_complete,
    make_params,
    musdb_setup,
    plan_dataset,
)
from longsep.data.synth.instruments import generate_song, render_song
from longsep.data.synth.plan import (
    PEAK,
    SCALES,
    TAIL_SECONDS,
    ControlDesign,
    Section,
    SongSpec,
    plan_song,
)

__all__ = [
    "FILES",
    "MANIFEST",
    "PEAK",
    "SCALES",
    "SETUP_FILE",
    "TAIL_SECONDS",
    "ControlDesign",
    "Section",
    "SongSpec",
    "SynthParams",
    "TrackJob",
    "ensure_dataset",
    "generate_dataset",
    "generate_song",
    "is_complete",
    "make_params",
    "musdb_setup",
    "plan_dataset",
    "plan_song",
    "render_song",
]
