"""The deployment spec: its typed schema (`schema`, and its sections: `model`, `serving`,
`keys`, `server`), YAML loading with positions (`loading`, `issues`) and several models in
one deployment (`deployment`). Everything else imports its names from here."""

from __future__ import annotations

from servectl.spec.base import DEFAULT_SPEC, NAME_PATTERN, SHARED_SECTIONS, Section
from servectl.spec.deployment import MODEL_KEYS, DeploymentSpec, SharedSpec, default_path, load_deployment, load_spec
from servectl.spec.issues import Locator, Path_, SpecError, SpecIssue, dotted, yaml_positions
from servectl.spec.keys import AuthSpec, ModelAuthSpec, NamedKey, keys_not_blank, split_keys
from servectl.spec.loading import SpecFile, describe_errors, issue_at, read_spec_file, resolve, validate_model
from servectl.spec.model import TASKS, ModelSpec, OnnxOptions, TensorDecl
from servectl.spec.schema import Spec
from servectl.spec.server import API_PROCESSES_ON_RAY, ApiSpec, RuntimeSpec, ServerSpec, TracingSpec
from servectl.spec.serving import (
    BatchingSpec,
    CacheSpec,
    DevicesSpec,
    LimitsSpec,
    RateSpec,
    ScalingSpec,
    SupervisorSpec,
)

__all__ = [
    "API_PROCESSES_ON_RAY",
    "DEFAULT_SPEC",
    "MODEL_KEYS",
    "NAME_PATTERN",
    "SHARED_SECTIONS",
    "TASKS",
    "ApiSpec",
    "AuthSpec",
    "BatchingSpec",
    "CacheSpec",
    "DeploymentSpec",
    "DevicesSpec",
    "LimitsSpec",
    "Locator",
    "ModelAuthSpec",
    "ModelSpec",
    "NamedKey",
    "OnnxOptions",
    "Path_",
    "RateSpec",
    "RuntimeSpec",
    "ScalingSpec",
    "Section",
    "ServerSpec",
    "SharedSpec",
    "Spec",
    "SpecError",
    "SpecFile",
    "SpecIssue",
    "SupervisorSpec",
    "TensorDecl",
    "TracingSpec",
    "",
    "default_path",
    "describe_errors",
    "dotted",
    "issue_at",
    "keys_not_blank",
    "load_deployment",
    "load_spec",
    "read_spec_file",
    "resolve",
    "split_keys",
    "validate_model",
    "yaml_positions",
]
