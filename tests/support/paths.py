"""Where things are: the repository's root and the test handlers."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLBOX = ROOT / "tests" / "handlers" / "toolbox.py"
STREAMER = ROOT / "tests" / "handlers" / "streamer.py"
