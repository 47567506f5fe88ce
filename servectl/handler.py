"""Finding a user's handler and adapting it to one fixed calling convention.

A handler is a plain module, class or object with any of `setup(device, spec)`,
`decode(request)`, `predict(batch)`, `encode(output)`, `batch(items)`, `unbatch(out)`.
No base class. Only worker processes import handlers: the API process learns about one
through `HandlerInfo`, which workers send at start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, get_args, get_type_hints

import msgspec
from pydantic import BaseModel, TypeAdapter

from servectl.sdk import END, Chunks, Final, InvalidInput, Many

# the public names, kept importable from here for handlers written before servectl.sdk
__all__ = ["END", "Chunks", "Final", "Handler", "HandlerError", "HandlerInfo", "InvalidInput", "Many"]

HOOKS = ("setup", "decode", "predict", "encode", "batch", "unbatch")
# how many positional arguments each hook is called with
_ARITY = {"setup": 2, "decode": 1, "predict": 1, "encode": 1, "batch": 1, "unbatch": 1}


class HandlerError(Exception):
    """A handler that cannot be found, imported or called as the contract says."""


class HandlerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the API process knows about a handler: reported by workers at start-up."""

    name: str
    hooks: tuple[str, ...]
    request_schema: dict[str, Any] | None = None
    response_schema: dict[str, Any] | None = None
    example: Any = None
    defs: dict[str, Any] = {}
    streams: bool = False
    chunk_schema: dict[str, Any] | None = None  # one streamed chunk, when the handler declares it
    metadata: dict[str, Any] | None = None  # V2 model metadata, for api.kind v2
    routes: dict[str, HandlerInfo] = {}  # api.kind's protocol adapters, by route
    continuous: bool = False  # generation: the worker takes requests while it generates (up to max_batch_size)


def _search_dirs(base_dir: Path) -> list[Path]:
    """Where handler references are looked up: the spec's folder, the working directory, and
    the spec folder's parent (so `configs/x.yaml` finds `handlers/` beside `configs/`)."""
    dirs: list[Path] = []
    for d in (base_dir.resolve(), Path.cwd().resolve(), base_dir.resolve().parent):
        if d not in dirs:
            dirs.append(d)
    return dirs


def _import_path(ref: str, base_dir: Path) -> ModuleType:
    candidates = [Path(ref)] if Path(ref).is_absolute() else [d / ref for d in _search_dirs(base_dir)]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise HandlerError(f"handler file {ref!r} not found (looked at {', '.join(map(str, candidates))})")
    name = "servectl_handler_" + path.stem
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise HandlerError(f"handler file {ref!r} is not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def load_handler_object(ref: str, base_dir: Path) -> Any:
    """Import `ref` and return the module, or the named attribute (a class is instantiated)."""
    module_ref, _, attr = ref.partition(":")
    for folder in reversed(_search_dirs(base_dir)):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        if module_ref.endswith(".py") or "/" in module_ref:
            module = _import_path(module_ref, base_dir)
        else:
            module = importlib.import_module(module_ref)
    except HandlerError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and module_ref.startswith(exc.name):
            where = ", ".join(map(str, _search_dirs(base_dir)))
            raise HandlerError(f"handler module {module_ref!r} not found (looked in {where})") from None
        raise HandlerError(f"handler {module_ref!r} failed to import: {exc}") from exc
    except Exception as exc:
        raise HandlerError(f"handler {module_ref!r} failed to import: {exc!r}") from exc
    if not attr:
        return module
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise HandlerError(f"handler module {module_ref!r} has no attribute {attr!r}") from None
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise HandlerError(f"handler class {ref!r} could not be created: {exc!r}") from exc
    return obj


def _positional_capacity(fn: Callable[..., Any]) -> tuple[int, int]:
    """(required, maximum) positional parameters of a callable; maximum -1 means *args."""
    required, maximum = 0, 0
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return required, -1
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            maximum += 1
            if p.default is p.empty:
                required += 1
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            required += 99  # cannot be called positionally at all
    return required, maximum


def _model_type(tp: Any) -> type[BaseModel] | None:
    return tp if inspect.isclass(tp) and issubclass(tp, BaseModel) else None


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:
        return {}


class Handler:
    """A user's handler behind the fixed calling convention the worker uses."""

    def __init__(self, obj: Any, name: str, runner: Any = None) -> None:
        self.obj = obj
        self.name = name
        self.runner = runner  # the built-in runner that predicts, under any user pre/post hooks
        self.hooks: dict[str, Callable[..., Any]] = {}
        for hook in HOOKS:
            fn = getattr(obj, hook, None)
            if fn is None:
                continue
            if not callable(fn):
                raise HandlerError(f"{name}.{hook} must be callable, not {type(fn).__name__}")
            required, maximum = _positional_capacity(fn)
            want = _ARITY[hook]
            if hook == "setup":
                if required > want:
                    raise HandlerError(f"{name}.setup takes at most (device, spec) arguments")
            elif required > want or (maximum != -1 and maximum < want):
                raise HandlerError(f"{name}.{hook} must take exactly one positional argument")
            self.hooks[hook] = fn
        if not self.hooks.keys() & {"predict", "decode", "encode"} and not any(
            callable(getattr(obj, hook, None))
            for hook in ("complete", "embed")  # the OpenAI contract (servectl.sdk.OpenAIHandler, EmbedHandler)
        ):
            raise HandlerError(f"{name} defines none of predict, decode, encode (or complete, embed)")
        setup_max = _positional_capacity(self.hooks["setup"])[1] if "setup" in self.hooks else 2
        self.setup_arity = 2 if setup_max == -1 else min(setup_max, 2)
        self.request_type = self._request_type()
        self.response_type = self._response_type()
        self._request_adapter = TypeAdapter(self.request_type) if self.request_type else None

    @classmethod
    def load(cls, ref: str, base_dir: Path) -> Handler:
        return cls(load_handler_object(ref, base_dir), ref)

    def _request_type(self) -> type[BaseModel] | None:
        declared = _model_type(getattr(self.obj, "request_model", None))
        fn = self.hooks.get("decode")
        if declared is not None or fn is None:
            return declared
        hints = _hints(fn)
        params = [p for p in inspect.signature(fn).parameters if p in hints and p != "return"]
        return _model_type(hints[params[0]]) if params else None

    def _response_type(self) -> type[BaseModel] | None:
        declared = _model_type(getattr(self.obj, "response_model", None))  # for hooks that build dicts
        fn = self.hooks.get("encode")
        return declared or (_model_type(_hints(fn).get("return")) if fn else None)

    def _chunk_type(self) -> type[BaseModel] | None:
        """A streamed chunk's type: `chunk_model`, or X from encode's `-> Iterator[X]`."""
        declared = _model_type(getattr(self.obj, "chunk_model", None))
        fn = self.hooks.get("encode")
        args = get_args(_hints(fn).get("return")) if fn and self.streams else ()
        return declared or (_model_type(args[0]) if len(args) == 1 else None)

    def info(self) -> HandlerInfo:
        """Hooks and JSON schemas (their `$defs` gathered apart, for OpenAPI's components)."""
        ref = "#/components/schemas/{model}"
        types = (self.request_type, self.response_type, self._chunk_type())
        req, resp, chunk = (t.model_json_schema(ref_template=ref) if t else None for t in types)
        defs: dict[str, Any] = {}
        for schema in (req, resp, chunk):
            if schema:
                defs.update(schema.pop("$defs", {}))
        return HandlerInfo(
            name=self.name,
            hooks=tuple(self.hooks),
            request_schema=req,
            response_schema=resp,
            example=getattr(self.obj, "example", None),
            defs=defs,
            streams=self.streams,
            chunk_schema=chunk,
        )

    @property
    def streams(self) -> bool:
        """True when `predict` or `encode` is a generator, or a generation job has chunks (the
        OpenAI adapters): answers go out chunk by chunk."""
        if callable(getattr(self.obj, "generation_job", None)) and getattr(self.obj, "chunk_model", None):
            return True
        return any(inspect.isgeneratorfunction(self.hooks.get(h)) for h in ("predict", "encode"))

    # --- the calling convention -------------------------------------------------

    def setup(self, device: str, spec: Any) -> None:
        fn = self.hooks.get("setup")
        if fn is not None:
            fn(*(device, spec)[: self.setup_arity])

    def validate(self, payload: Any) -> Any:
        """Turn parsed JSON into the decode hook's declared type (raises pydantic errors)."""
        if self._request_adapter is None:
            return payload
        return self._request_adapter.validate_python(payload)

    def decode(self, request: Any) -> Any:
        fn = self.hooks.get("decode")
        return fn(request) if fn else request

    def batch(self, items: list[Any]) -> Any:
        fn = self.hooks.get("batch")
        return fn(items) if fn else items

    def predict(self, batch: Any) -> Any:
        fn = self.hooks.get("predict")
        return fn(batch) if fn else batch

    def unbatch(self, output: Any, size: int) -> list[Any]:
        fn = self.hooks.get("unbatch")
        outputs = fn(output) if fn else output
        try:
            outputs = list(outputs)
        except TypeError:
            raise HandlerError(
                f"{self.name}.predict returned {type(output).__name__}, not a list of {size} outputs"
            ) from None
        if len(outputs) != size:
            raise HandlerError(f"{self.name}.predict returned {len(outputs)} outputs for a batch of {size} inputs")
        return outputs

    def encode(self, output: Any) -> Any:
        fn = self.hooks.get("encode")
        return fn(output) if fn else output
