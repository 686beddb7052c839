"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, whose jobs end when SLURM says so.

Why a subclass: the plugin waits on each job with submitit's ``Job.results()``, which hangs (no accounting) or
raises (accounting) when a job dies without writing its result: SIGKILL from the OOM killer, a segfault, a lost
node. Here the jobs end by SLURM's final state (:func:`roadmap.cluster.slurm_jobs.jobs_ended_by_slurm_state`), and a job
that died is recorded ``failed`` with what SLURM said (:func:`roadmap.cluster.slurm_jobs.record_death`) and handed to
Hydra as completed, so the sweep reports it and goes on. In a job of several tasks (DDP), Hydra's own job files
(``.hydra/``, the job log) are global rank 0's; the other ranks log to their SLURM output. Everything else is
the plugin's.
"""
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class RoadmapSlurmLauncher(SlurmLauncher):
    """``hydra/launcher=slurm``: the plugin's launcher whose jobs end by SLURM's state, and whose dead jobs are
    recorded ``failed`` instead of hanging or raising."""

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state):
        import submitit

        from roadmap.run.outcome import OTHER_RANKS_HYDRA

        if submitit.JobEnvironment().global_rank:
            sweep_overrides = [*sweep_overrides, *OTHER_RANKS_HYDRA]
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def launch(self, job_overrides, initial_job_idx: int):
        from roadmap.cluster.slurm_jobs import Died, jobs_ended_by_slurm_state, record_death

        with jobs_ended_by_slurm_state():
            returns = super().launch(job_overrides, initial_job_idx)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        kept = []
        for num, (overrides, ret) in enumerate(zip(job_overrides, returns), initial_job_idx):
            if isinstance(ret, Died):
                record_death(sweep_dir / str(num), list(overrides), ret.error(), replaces_failed=ret.rank is not None)
                ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)
            kept.append(ret)
        return kept
