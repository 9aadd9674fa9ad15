"""Files a reviewer owns (model declarations, data contracts): YAML read into a strict model,
or one line that names the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from shipway.errors import PolicyError, shown

M = TypeVar("M", bound=BaseModel)


def load_reviewed_file(path: Path, model: type[M], kind: str) -> M:
    """Read a YAML file a reviewer owns (declaration, contract) into `model`, or fail in one
    line that names the file, the field and what was expected."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{kind} {path} not found") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{kind} {path} is not valid YAML: {_one_line(str(exc))}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{kind} {path} must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            + (
                f" (got {shown(err['input'], 100)})"
                if err["type"] not in ("missing", "value_error")
                else ""
            )
            for err in exc.errors()
        )
        raise PolicyError(f"{kind} {path} is invalid: {_one_line(problems)}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
