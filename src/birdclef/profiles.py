"""Profiles: profiles/base.yaml holds every param; each other profile is an overlay of the keys it
changes, merged over the base into params.yaml (`make profile PROFILE=<name>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from birdclef.config import DEFAULT_PARAMS, ConfigError, Params, format_error


PROFILES = Path("profiles")
BASE_PROFILE = "base"


def merge(base: Any, overlay: Any) -> Any:
    """`overlay` over `base`: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in overlay.items()}}
    return overlay


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def profile_params(name: str, folder: Path = PROFILES) -> dict[str, Any]:
    """The params of profile `name`: profiles/base.yaml with profiles/<name>.yaml over it."""
    overlay_path = folder / f"{name}.yaml"
    if not overlay_path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != BASE_PROFILE)
        raise ConfigError(f"{overlay_path}: no such profile (profiles: {', '.join(known)})")
    merged = merge(_read_yaml(folder / f"{BASE_PROFILE}.yaml"), _read_yaml(overlay_path) or {})
    try:
        Params.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_error(overlay_path, exc)) from None
    return merged


def write_profile(name: str, out: Path = DEFAULT_PARAMS, folder: Path = PROFILES) -> None:
    """Write profile `name` as the active params file."""
    merged = profile_params(name, folder)
    header = (f"# Profile \"{name}\": profiles/base.yaml with profiles/{name}.yaml over it, written by "
              f"`make profile PROFILE={name}`.\n# Edit freely; `make profile` overwrites it.\n")
    out.write_text(header + yaml.safe_dump(merged, sort_keys=False))
