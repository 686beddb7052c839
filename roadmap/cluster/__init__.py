"""Where runs execute beyond one process: SLURM jobs that end by SLURM's own word (``slurm_jobs``, for the project's
Hydra launcher) and torchrun with a process group per restart (``torchrun``)."""
