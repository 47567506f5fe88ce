"""`servectl client-gen`: typed clients (Python, TypeScript) and curl examples generated from
a deployment's OpenAPI document, read from a spec in-process or from a running server."""

from __future__ import annotations

from servectl.clientgen.copied import copied_runtime
from servectl.clientgen.source import ClientGenError, Source, from_spec, from_url

LANGS = ("python", "typescript", "curl")
__all__ = ["LANGS", "ClientGenError", "Source", "copied_runtime", "from_spec", "from_url", "generate"]


def generate(source: Source, lang: str, default_url: str) -> str:
    """The client's text; the same document always gives the same bytes."""
    if lang == "python":
        from servectl.clientgen.python import generate_python

        return generate_python(source, default_url)
    if lang == "typescript":
        from servectl.clientgen.typescript import generate_typescript

        return generate_typescript(source, default_url)
    if lang == "curl":
        from servectl.clientgen.curl import generate_curl

        return generate_curl(source, default_url)
    raise ClientGenError(f"--lang must be one of {', '.join(LANGS)}, not {lang!r}")
