"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (DVC's own Hydra helper).

``conf/config.yaml``'s defaults list ends with ``project`` (``conf/project.yaml``, committed) and an
optional ``local`` (``conf/local.yaml``, gitignored), so both apply to every composition, after the
defaults and before the command line's overrides.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from distill.errors import ConfigError


def compose(config_dir: Path, overrides: list[str] | None = None, config_name: str = "config") -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with _hydra_errors(config_dir, overrides), \
            initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)


def compose_to_file(config_dir: Path, output: Path, overrides: list[str] | None = None) -> None:
    from dvc.utils.hydra import compose_and_dump

    with _hydra_errors(config_dir, overrides):
        compose_and_dump(output, str(Path(config_dir).resolve()), None, "config", Path.cwd(), overrides or [])


@contextmanager
def _hydra_errors(config_dir: Path, overrides: list[str] | None):
    """Turn Hydra's composition errors into a ConfigError that says what to change."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(composition_error(e, Path(config_dir), overrides or [])) from None


def composition_error(err: Exception, config_dir: Path, overrides: list[str]) -> str:
    import re

    text = str(err).split("\nConfig search path:")[0].strip()
    shown = " ".join(overrides) or "(no overrides)"
    msg = f"cannot compose {config_dir}/ with {shown}: {text}"
    missing = re.search(r"Could not find 'filter/([^']+)'", text)
    if missing:
        from distill.filterspec import latest_version, missing_conf_message

        name = missing.group(1)
        version = latest_version("filters", name)
        if version:
            msg += "\n" + missing_conf_message(name, version, "filters", config_dir)
        else:
            msg += (f"\nno filter folder filters/{name}/<version>/ either: create the filter (see the README, "
                    f"Filters), then {config_dir / 'filter' / (name + '.yaml')}")
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        msg += (f"\n{override.group(1)} is not a key of the composed config: check its spelling; a key that "
                f"only some options have needs that option selected first (e.g. -S oracle=openai "
                f"-S oracle.transport=aiohttp), or add it with +{override.group(1)}=...")
    return msg
