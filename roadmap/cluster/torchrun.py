"""``trainer=torchrun``: Lightning's TorchElasticEnvironment, with a process group of its own for each restart.

Why: under torchrun's static rendezvous (``--master-addr/--master-port``, one agent per node) the workers' process
group meets on the agents' one TCPStore, which every restart reuses without a per-attempt prefix: a restarted
worker reads the dead workers' gloo/NCCL addresses and fails to connect (``Gloo connectFullMesh failed ...
Connection refused``) until ``--max-restarts`` is spent. Here the workers of restart ``n`` meet on a store of
their own that rank 0 hosts at ``MASTER_PORT + 1 + n``, on the master's address: a fresh one per attempt.
"""
import os

from lightning.pytorch.plugins.environments import TorchElasticEnvironment


class RestartableTorchElasticEnvironment(TorchElasticEnvironment):
    """TorchElasticEnvironment whose process group of restart ``n`` (``TORCHELASTIC_RESTART_COUNT``) is on port
    ``MASTER_PORT + 1 + n``, hosted by rank 0 (not the agents' store): keep that many ports after
    ``--master-port`` free."""

    def __init__(self) -> None:
        super().__init__()
        os.environ["TORCHELASTIC_USE_AGENT_STORE"] = str(False)  # torch.distributed: rank 0 hosts the store

    @property
    def main_port(self) -> int:
        return super().main_port + 1 + int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
