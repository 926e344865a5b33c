"""The one reader of `serve_config.yaml`: parse it, find its applications, validate their `args`.

Preflight, the benchmarks and the cluster checker all read the config through here, so what one of
them accepts is what `serve run` deploys. Reading never imports Ray; validating `args` imports the
deployment module that will receive them (its pydantic model is the schema).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["DEFAULT_MODEL", "DEFAULT_PATH", "ServeConfig", "ServeConfigError", "is_pool", "load_serve_config"]

DEFAULT_MODEL = "stress"  # the Dreaddit classifier; its variants also answer at the old /<variant> routes
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "serve_config.yaml"
_POOL_IMPORT = "deployments.pool:"


class ServeConfigError(ValueError):
    """The config file is unreadable, or an application in it is malformed; the message names which."""


def is_pool(app: dict[str, Any]) -> bool:
    return str(app.get("import_path", "")).startswith(_POOL_IMPORT)


@dataclass(frozen=True)
class ServeConfig:
    """A parsed Serve config (the `serve run` / `serve deploy` schema), as plain dicts."""

    path: Path
    raw: dict[str, Any]

    @property
    def applications(self) -> list[dict[str, Any]]:
        return self.raw["applications"]

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {app["name"]: app for app in self.applications}

    def classifier_apps(self) -> dict[str, dict[str, Any]]:
        """The dedicated classifier applications (not the pool, not a catch-all 404), by the name a
        client gives: `variant` for the default model's, `model/variant` for another model's."""
        apps = {}
        for app in self.applications:
            args = app.get("args") or {}
            if "variant" in args:
                model = args.get("model", DEFAULT_MODEL)
                apps[args["variant"] if model == DEFAULT_MODEL else f"{model}/{args['variant']}"] = app
        return apps

    def model_dirs(self) -> dict[str, str]:
        """Every served `model/variant` -> its artifact folder as written, the dedicated apps' and the
        pool's: what must be built before a deploy."""
        dirs: dict[str, str] = {}
        for app in self.applications:
            args = app.get("args") or {}
            if "variant" in args and "model_dir" in args:
                dirs[f"{args.get('model', DEFAULT_MODEL)}/{args['variant']}"] = args["model_dir"]
            if is_pool(app):
                models = dict(args.get("models") or {})
                if args.get("variants"):
                    models[args.get("default_model", DEFAULT_MODEL)] = args["variants"]
                for model, variants in models.items():
                    dirs.update({f"{model}/{v}": d for v, d in (variants or {}).items()})
        return dirs

    def pool_app(self) -> dict[str, Any] | None:
        return next((a for a in self.applications if is_pool(a)), None)

    def served_apps(self) -> list[dict[str, Any]]:
        """The applications that hold models: every classifier and the pool."""
        return [a for a in self.applications if "variant" in (a.get("args") or {}) or is_pool(a)]

    def env_vars(self, app: dict[str, Any] | None = None) -> dict[str, str]:
        """`runtime_env.env_vars` of `app` (default: the first served one): what replicas run under."""
        app = app or self.served_apps()[0]
        return dict((app.get("runtime_env") or {}).get("env_vars") or {})

    def validated_args(self, app: dict[str, Any]) -> BaseModel:
        """The application's `args` as its deployment parses them; ServeConfigError names each problem."""
        if is_pool(app):
            from deployments.pool import PoolArgs as schema
        else:
            from deployments.classifier import ClassifierArgs as schema
        try:
            return schema(**(app.get("args") or {}))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ServeConfigError(f"args rejected: {problems}") from exc


def load_serve_config(path: str | os.PathLike = DEFAULT_PATH) -> ServeConfig:
    """Parse `path`; ServeConfigError names the file when it is unreadable or lists no applications."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ServeConfigError(f"cannot read the Serve config {path}: {exc}") from exc
    apps = raw.get("applications") if isinstance(raw, dict) else None
    if not isinstance(apps, list) or not apps:
        raise ServeConfigError(f"{path} has no applications")
    if not all(isinstance(a, dict) and a.get("name") for a in apps):
        raise ServeConfigError(f"{path}: every application must be a mapping with a name")
    return ServeConfig(path, raw)
