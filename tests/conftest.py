"""Session-wide test settings."""
import os
import tempfile
from pathlib import Path

# Triton picks interpreter or compiler when it is first imported (lightning and timm import it). Without a GPU
# its kernels can only run interpreted, on CPU tensors: that is how tests/test_depthwise.py checks them here.
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Depthwise convs measure their fastest path once per machine (roadmap/depthwise.py): keep the choices of this
# session, subprocess runs included, out of the user's cache.
os.environ.setdefault("ROADMAP_CACHE_DIR", tempfile.mkdtemp(prefix="roadmap-cache-"))
