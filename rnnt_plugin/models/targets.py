"""The ``_target_`` names that configs (and ``.nemo`` archives) of earlier versions give the plugin's components,
mapped to today's when a model is built from them."""

from omegaconf import DictConfig, open_dict

# Before the NeMo adapters moved into rnnt_plugin.models (the torch-only core came in beside them).
MOVED = {
    "rnnt_plugin.features.": "rnnt_plugin.models.features.",
    "rnnt_plugin.encoder.": "rnnt_plugin.models.encoder.",
    "rnnt_plugin.joint.": "rnnt_plugin.models.joint.",
}


def current_targets(model_cfg: DictConfig) -> DictConfig:
    """``model_cfg`` with every ``_target_`` of a moved class renamed (in place; returned for chaining)."""
    for name in ("preprocessor", "spec_augment", "encoder", "joint"):
        section = model_cfg.get(name)
        target = section.get("_target_") if isinstance(section, DictConfig) else None
        if not isinstance(target, str):
            continue
        for old, new in MOVED.items():
            if target.startswith(old):
                with open_dict(section):
                    section._target_ = new + target[len(old):]
    return model_cfg
