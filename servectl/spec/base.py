"""What every section of the spec shares: no unknown keys, frozen, no `true` for a number;
the `${pkg:...}` resolver; the spec's constants."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, get_args

from omegaconf import OmegaConf
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

DEFAULT_SPEC = Path(__file__).parent.parent / "examples" / "quickstart.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
SHARED_SECTIONS = ("server", "auth", "runtime")  # one per server: shared by every model of a deployment


def _package_path(package: str, *parts: str) -> str:
    """`${pkg:name,sub,dir}`: a path inside an installed package, found without importing it."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return str(Path(next(iter(found.submodule_search_locations)), *parts))


if not OmegaConf.has_resolver("pkg"):
    OmegaConf.register_resolver("pkg", _package_path)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`true` where a number is asked for is a mistake, not 1 (pydantic's lax mode takes it)."""
        if isinstance(value, bool) and info.field_name is not None:
            kinds = set(get_args(cls.model_fields[info.field_name].annotation)) or {
                cls.model_fields[info.field_name].annotation
            }
            if bool not in kinds and kinds & {int, float}:
                raise PydanticCustomError("number_type", "Input should be a number, not true or false")
        return value
