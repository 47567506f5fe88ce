"""MkDocs hook: a line `<!-- reference: NAME -->` in a page becomes the generated reference
(`reference_pages.render(NAME)`: spec, cli, metrics or errors) at build time."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from reference_pages import render

_MARK = re.compile(r"^<!-- reference: (\w+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _MARK.sub(lambda m: render(m.group(1)), markdown)
