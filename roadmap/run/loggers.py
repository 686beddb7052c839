"""Loggers as the configs build them (``conf/logger/``)."""
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` without the ``anonymous=None`` it always hands to ``wandb.init``: wandb ≥ 0.23 has
    no anonymous mode and warns about that argument on every run, whatever ``settings.silent`` says."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous")
