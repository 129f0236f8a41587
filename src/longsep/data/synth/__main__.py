"""``python -m longsep.data.synth --out DIR ...``."""

from longsep.data.synth.cli import main

raise SystemExit(main())
