"""The models: one parametric builder for every roadmap step (``net.RoadmapNet``), the norm and activation a knob
names (``layers``), depthwise convolution with its measured paths and Triton kernels (``depthwise``,
``depthwise_paths``, ``triton_depthwise``), a model's shapes on the meta device (``shapes``: GFLOPs, parameters, the
input-size check), and weights in and out (``weights``, with ``key_maps`` to timm's and torchvision's keys). Imports
only ``roadmap.utils`` and ``roadmap.errors``: a model knows nothing of configs, data or runs."""
