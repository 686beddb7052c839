"""The data: the Lightning data module, the embedded synthetic shapes, image folders and ImageNet tars
(``datamodule``), a data root's file index, built once and verified (``file_index``), and the loader's speed beside
timm's (``bench``). ``python -m roadmap.data verify ROOT`` checks a root once. Imports ``roadmap.config``, never the
run."""
