"""The config: where config files live and the checks a user's file gets (``files``), the schema of a composed run
config and its validation (``schema``), the Trainer's arguments and the process a run needs (``trainer``), the command
line before Hydra composes it (``command_line``), steps and regimes composed and built (``steps``), a run's identity
and folder (``identity``), the effective run (``effective``) and the recipe's pieces timm builds from names
(``recipe``). Imports ``roadmap.models`` (to check and build what a config names), never the data or the run."""
