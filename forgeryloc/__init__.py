"""forgeryloc: find where a photograph was manipulated, with M2SFormer."""
from __future__ import annotations

__version__ = "0.1.0"


def load_model(name_or_path=None, device="cpu"):
    """(model, card) in eval mode: a config name (e.g. "m2sformer-lite0") builds a fresh,
    untrained network with the default preprocessing card; a path loads that checkpoint; None
    loads the shipped one. torch is imported here, so `import forgeryloc` stays light."""
    from pathlib import Path

    from .model.m2sformer import CONFIGS, build_model
    from .weights import CheckpointInfo, load_model as load_checkpoint

    is_name = isinstance(name_or_path, str) and name_or_path in CONFIGS
    if is_name and not Path(name_or_path).exists():
        model = build_model(name_or_path)
        return model.eval().to(device), CheckpointInfo(config=model.config)
    return load_checkpoint(name_or_path, device)
