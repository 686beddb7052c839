"""What every layer shares and none owns: atomic file writes (``files``), the tools' argument parser and table output
(``cli``), device names and ``--device`` (``devices``), the one timer (``timing``) and glibc malloc settings for CPU
tensors (``cpu_allocator``). Imports nothing of the project but ``roadmap.errors``."""
