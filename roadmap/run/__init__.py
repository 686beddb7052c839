"""The run: its plan, resolved once and checked before any work (``plan``), training (``train``) with the
LightningModule (``module``), callbacks, checkpoints and loggers, evaluation (``evaluate``), the run record
(``record``: ``metrics.json`` and the run folder's files) and a sweep job's outcome (``outcome``)."""
