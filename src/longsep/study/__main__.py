"""``python -m longsep.study <multirun dir> [--out DIR] [--scaling FILE.jsonl]``."""

from longsep.cli.study import main

raise SystemExit(main())
