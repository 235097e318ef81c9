"""Entry point (owns tools/chaos/__main__.py): `python3 tools/chaos ...` or, with tools/ on
sys.path, `python3 -m chaos ...`; see cli.py."""

import sys
from pathlib import Path

if not __package__:  # run as a directory: sys.path[0] is tools/chaos/, make it tools/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from chaos.cli import main  # noqa: E402  (after the sys.path fix above)

if __name__ == "__main__":
    sys.exit(main())
