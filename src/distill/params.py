"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (DVC's own Hydra helper)."""

from __future__ import annotations

from pathlib import Path


def compose(config_dir: Path, overrides: list[str] | None = None, config_name: str = "config") -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)


def compose_to_file(config_dir: Path, output: Path, overrides: list[str] | None = None) -> None:
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(output, str(Path(config_dir).resolve()), None, "config", Path.cwd(), overrides or [])
