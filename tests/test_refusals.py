"""Bad input, as a researcher types it into each tool: refused before any work, in one line naming the fix, exit 2,
no traceback, nothing left on disk. The table runs in two processes (tests/command_runner.py), not one per case."""
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from timm.data import ImageNetInfo

from roadmap.config.files import CONFIG_PATH_ENV
from roadmap.fake_imagenet import fake_jpeg, write_tars
from roadmap.models.net import RoadmapNet
from roadmap.models.weights import export
from tests.helpers import run_commands, write_run

R50_CONFIG = "regime: {name: r50}\n"

# A user's config folders, one problem each (a broken step file breaks the roadmap it belongs to)
USER_FOLDERS = {
    "no_header": {"step/my_step.yaml": "defaults: [kernel_7, _self_]\nmodel:\n  act: silu\n"},
    "broken_yaml": {"step/my_step.yaml": "# @package _global_\ndefaults: [kernel_7, _self_]\nmodel:\n  act: [silu\n"},
    "unknown_knob": {"step/my_step.yaml": "# @package _global_\ndefaults: [kernel_7, _self_]\nmodel:\n  kernal_size: 5\n"},
    "no_parent": {"step/my_step.yaml": "# @package _global_\ndefaults: [kernel_77, _self_]\nmodel:\n  act: silu\n"},
    "shadow": {"step/gelu.yaml": "# @package _global_\ndefaults: [kernel_7, _self_]\nmodel:\n  act: silu\n"},
    "regime_key": {"regime/r18.yaml": "resnet: ResNet-18\nconvnext: C\nresnet_depths: [2, 2, 2, 2]\n"
                                      "stage_ratio: {depths: [1, 1, 3, 1], width: 16}\nwide_widht: 24\ndrop_path_rate: 0\n"},
    "broken_data": {"data/mine.yaml": "kind: imagefolder\nroot: [\n"},
    "data_missing": {"data/mine.yaml": "kind: imagefolder\nroot: /tmp\nimg_size: 32\nnum_classes: 2\n"
                                       "train_crop_scale: [0.08, 1.0]\ncrop_pct: 0.875\n"},
    "regime_missing": {"regime/r18.yaml": "resnet: ResNet-18\nconvnext: C\nresnet_depths: [2, 2, 2, 2]\n"
                                          "stage_ratio: {depths: [1, 1, 3, 1], width: 16}\ndrop_path_rate: 0\n"},
}

# (tool, arguments, what the one line says); run.py cases get run.root=<their own folder> (unless they set it)
# and logger=csv; {user:NAME} is a folder of USER_FOLDERS on $ROADMAP_CONFIG_PATH, {env:VAR=PATH} sets VAR to the test's
# folder's PATH, {tmp} the test's folder
CASES = [
    # unknown keys, with or without +, and keys given twice
    ("run", "+step=gelu +recipe.base_lrr=0.1", "unknown key recipe.base_lrr; did you mean recipe.base_lr?"),
    ("run", "+step=gelu recipe.base_lrr=0.1", "unknown key recipe.base_lrr; did you mean recipe.base_lr?"),
    ("run", "+step=gelu budget.epochs=-1", "unknown key budget.epochs; did you mean recipe.epochs?"),
    ("run", "+step=gelu +seeed=1", "unknown key seeed; did you mean seed?"),
    ("run", "+step=gelu +model.kernal_size=5", "unknown key model.kernal_size; did you mean model.kernel_size?"),
    ("run", "+step=gelu +trainer.fast_dev_runn=true", "unknown key trainer.fast_dev_runn: not an argument of "
                                                      "lightning.Trainer; did you mean trainer.fast_dev_run?"),
    ("run", "+step=gelu +data.verify_images=false", "unknown key data.verify_images"),
    ("run", "+step=gelu +trainer.callbacks=[]", "trainer.callbacks is set by the run: add a callback as "
                                                "+callbacks.NAME._target_=pkg.Class"),
    ("run", "+step=gelu +callbacks.stop._target_=no.such.Callback", "callbacks.stop._target_=no.such.Callback: cannot "
                                                                   "import it (ModuleNotFoundError"),
    ("run", "+step=gelu +callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping +callbacks.stop.monitr=x",
     "unknown key callbacks.stop.monitr: not an argument of lightning.pytorch.callbacks.EarlyStopping; did you mean "
     "callbacks.stop.monitor?"),
    ("run", "+step=gelu recipe.base_lr=0.1 recipe.base_lr=0.2", "recipe.base_lr is given twice (recipe.base_lr=0.1, "
                                                                "recipe.base_lr=0.2): keep one"),
    ("run", "+step=gelu +step=kernel_7", "step is given twice (+step=gelu, +step=kernel_7): keep one"),
    ("run", "+step=gelu trainer.max_epochs=3", "trainer.max_epochs is set by the effective run"),
    # group choices
    ("run", "+step=nonexistent", "unknown step 'nonexistent'; valid steps: bn_to_ln,"),
    ("run", "+step=gelu regime=r999", "unknown regime 'r999'; valid regimes: family, r200, r50"),
    ("run", "+step=gelu data=imagenet", "unknown data 'imagenet' (did you mean imagenette?); valid data: cifar10,"),
    ("run", "+step=gelu budget=papr", "unknown budget 'papr' (did you mean paper?)"),
    ("run", "+step=gelu +experiment=paper", "unknown experiment 'paper' (did you mean"),
    ("run", "+step=gelu trainer=gpus", "unknown trainer 'gpus' (did you mean gpu?)"),
    ("run", "-m +step=gelu,kernel_77", "unknown step 'kernel_77'"),
    ("run", "-m +step=gelu seed=0,abc", "seed=abc: Value 'abc' of type 'str' could not be converted to Integer (in the "
                                        "sweep's job seed=abc: no job has run)"),
    ("run", "-m +step=gelu,patchify_stem recipe.optimizer.weight_decay=0.05,-1",
     "recipe.optimizer.weight_decay=-1.0: must be >= 0 (in the sweep's job"),
    ("run", "+step=gelu seed=0,1,2", "seed=0,1,2 is a sweep: give one value, or add -m to run.py for a job per value"),
    ("roadmap.explain", "+step=gelu seed=0,1", "seed=0,1 is a sweep: give one value"),
    ("run", "+step=gelu hydra.launcher.partition=gpu", "hydra.launcher.partition is not a key of this command's "
                                                       "launcher (Hydra's local one)"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}", "missing dataset folder {tmp}/train: data.root must contain "
                                                           "train/ and val/"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/no_images data.num_classes=3 budget.num_workers=0",
     "no images in {tmp}/no_images/train"),  # refused by the data module: the folder Hydra made goes too
    # the data: its classes, files, index and tars (tests/test_data.py has what is handled, not refused)
    ("run", "+step=gelu data=imagefolder data.root={tmp}/classes_differ data.num_classes=2",
     "the train and val classes of {tmp}/classes_differ differ (val has bird that train lacks; train has dog that val "
     "lacks): every class needs its folder in both"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/extra_val_class data.num_classes=2",
     "(val has eel that train lacks)"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/truncated_val data.num_classes=2 data.verify_images=false",
     "1 unreadable image(s) in {tmp}/truncated_val: {tmp}/truncated_val/val/cat/1.JPEG; delete or replace them"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/broken_link data.num_classes=2",
     "cannot read {tmp}/broken_link/train/cat/gone.JPEG (No such file or directory): remove it, or restore what it "
     "points to"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/truncated_train data.num_classes=2",
     "1 unreadable image(s) in {tmp}/truncated_train: {tmp}/truncated_train/train/dog/1.JPEG"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/pets data.num_classes=3",
     "{tmp}/pets has 2 classes but data.num_classes=3: set data.num_classes=2"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/pets data.num_classes=2 data.index_dir={tmp}/a_file/index",
     "cannot write the file index of {tmp}/pets in {tmp}/a_file/index"),
    ("run", "+step=gelu data=imagefolder data.root={tmp}/pets data.num_classes=2 data.max_bad_fraction=1.5",
     "data.max_bad_fraction=1.5: must be a fraction of an epoch's images in [0, 1)"),
    ("run", "+step=gelu data=imagenet_tar data.root={tmp}/tars data.num_classes=2",
     "no tar file {tmp}/tars/ILSVRC2012_img_train.tar: set data.root to the folder of ImageNet's tars"),
    ("run", "+step=gelu data=imagenet_tar data.root={tmp}/tars data.train_tar=flat.tar data.val_tar=val.tar "
            "data.num_classes=2", "{tmp}/tars/flat.tar holds images outside any class"),
    ("run", "+step=gelu data=imagenet_tar data.root={tmp}/tars data.train_tar=text.tar data.val_tar=val.tar "
            "data.num_classes=2", "{tmp}/tars/text.tar is not a readable uncompressed tar of images"),
    ("run", "+step=gelu data=imagenet_tar data.root={tmp}/tars data.train_tar=train.tar.gz data.val_tar=val.tar "
            "data.num_classes=2", "{tmp}/tars/train.tar.gz is not a readable uncompressed tar of images"),
    # the family and its recipes
    ("run", "regime=family +step=convnext_m", "unknown step 'convnext_m' (did you mean convnext_t?)"),
    ("run", "+step=convnext_s", "convnext_s is a member of regime family: add regime=family"),
    ("run", "regime=family +step=gelu", "regime family runs its own steps (convnext_t, convnext_s, convnext_b, "
                                        "convnext_l, convnext_xl), not gelu"),
    ("run", "regime=family +step=convnext_xl", "the paper gives no stochastic depth for this model under recipe convnext "
                                               "(it gives one for: in22k, ft_in22k, in regime.drop_path)"),
    ("run", "+step=separate_downsampling recipe=convnext_in22k", "recipe convnext_in22k takes each family member's "
                                                                 "stochastic depth (regime.drop_path), which regime r50 has not"),
    ("run", "regime=family +step=convnext_b recipe=convnext_ft_in22k recipe.layer_decay=1.5",
     "recipe.layer_decay=1.5: must be in (0, 1] or null (none)"),
    ("run", "regime=r200 +step=modern_recipe recipe=convnext_ft_in1k recipe.drop_path_rate=0.1",
     "recipe.layer_decay=0.7: the official ConvNeXt's layer-wise lr decay groups the 27 stage-3 blocks of "
     "ConvNeXt-S/B/L/XL in threes, and its main.py refuses any other model; this one has depths [3, 24, 36, 3]"),
    ("run", "regime=family +step=convnext_t recipe=convnext_ft_in22k recipe.drop_path_rate=0.1",
     "recipe.layer_decay=0.8: the official ConvNeXt's layer-wise lr decay groups the 27 stage-3 blocks of "
     "ConvNeXt-S/B/L/XL in threes, and its main.py refuses any other model; this one has depths [3, 3, 9, 3]"),
    ("roadmap.explain", "regime=family +step=convnext_t recipe=convnext_ft_in22k recipe.drop_path_rate=0.1",
     "recipe.layer_decay=0.8: the official ConvNeXt's layer-wise lr decay groups the 27 stage-3 blocks"),
    # Lightning's loop arguments (every one of its Trainer signature but the reviewed switches: tests/test_training.py)
    ("run", "+step=gelu +trainer.max_time=00:00:01:00", "trainer.max_time is set by the effective run from the recipe "
                                                        "and budget: set budget.epoch_scale"),
    ("run", "+step=gelu +trainer.overfit_batches=2", "trainer.overfit_batches is set by the effective run"),
    ("run", "+step=gelu +trainer.check_val_every_n_epoch=3", "trainer.check_val_every_n_epoch is set by the effective "
                                                             "run from the recipe and budget: set recipe.validate"),
    # a regime's values: known keys only (an override of one names the run's folder: tests/test_sweep_analysis.py)
    ("run", "regime=family +step=convnext_b +regime.drop_path.in2k=0.3", "unknown key regime.drop_path.in2k"),
    ("run", "-m regime=family +step=convnext_t recipe=convnext_in1k regime.drop_path.in1k=0.1,abc",
     "regime.drop_path.in1k=abc (read as regime.drop_path_rate): Value 'abc' of type 'str' could not be converted to "
     "Float (in the sweep's job regime.drop_path.in1k=abc: no job has run)"),
    ("run", "regime=family +step=convnext_xl recipe=convnext_in1k", "or set regime.drop_path.in1k=<rate>"),
    # hints that point at the key, the file or the run
    ("run", "+step=gelu data=imagefolder data.roott=/x", "unknown key data.roott; did you mean data.root?"),
    ("run", "mode=eval ckpt={tmp}/gelu_run", "ckpt={tmp}/gelu_run is a folder: give a weights file, e.g. "
                                             "ckpt={tmp}/gelu_run/checkpoints/best.ckpt"),
    ("run", "+step=separate_downsampling model.init_from=timm:{tmp}/foreign/convnext_t.pth",
     "the weights of {tmp}/foreign/convnext_t.pth (as timm's convnext_tiny) do not fit this model"),
    ("roadmap.sweep", "--weights-of regime=family +step=convnext_t,convnext_s",
     "--weights-of names one run, and +step=convnext_t,convnext_s names several"),
    # a fine-tune with nothing to start from (absent, null, and empty as $(... --weights-of ...) gives when it finds none)
    ("run", "regime=family +step=convnext_b recipe=convnext_ft_in22k",
     "recipe=convnext_ft_in22k fine-tunes pre-trained weights, but model.init_from is not set: point it at the "
     "pre-trained run's checkpoints/last.ckpt or weights/*.safetensors"),
    ("run", "regime=family +step=convnext_b recipe=convnext_ft_in1k model.init_from=null",
     "recipe=convnext_ft_in1k fine-tunes pre-trained weights, but model.init_from is not set"),
    ("run", "regime=family +step=convnext_l recipe=convnext_ft_in22k model.init_from=",
     "recipe=convnext_ft_in22k fine-tunes pre-trained weights, but model.init_from is empty"),
    ("run", "regime=family +step=convnext_t data.img_size=16", "this step needs images of at least 32 px, data.img_size is 16"),
    ("run", "regime=family +step=convnext_b recipe=convnext_ft_in22k model.init_from={tmp}/gelu_run/weights/final.safetensors",
     "the weights of {tmp}/gelu_run/weights/final.safetensors (the gelu (r50) run) do not fit this model (depths 3-3-27-3, "
     "stem width 128: missing: "),
    ("run", "regime=family +step=convnext_b recipe=convnext_ft_in1k model.init_from={tmp}/gelu_run/weights/final.safetensors",
     "recipe.init_from_ema=true starts from EMA weights, which {tmp}/gelu_run/weights/final.safetensors is not known to hold"),
    ("roadmap.compare_models", "--rows convnext_q", "unknown row(s) convnext_q; rows: all, in1k, in22k or regnety_16g,"),
    ("roadmap.compare_models", "--weights {tmp}/no_such", "--weights {tmp}/no_such: no folder"),
    ("roadmap.compare_models", "--val {tmp}/a_file", "argument --val: no folder {tmp}/a_file"),
    ("roadmap.compare_models", "--rows convnext_t --no-speed --val {tmp}/imagenet1k --weights {tmp}/foreign --out {tmp}/cm",
     "{tmp}/foreign/convnext_t.pth does not hold ConvNeXt-T's weights (family:convnext_t)"),
    ("roadmap.compare_models", "--rows convnext_t --no-speed --val {tmp}/pets --weights {tmp}/foreign --out {tmp}/cm",
     "--val {tmp}/pets: val/ holds 2 class folders (cat, dog not ImageNet-1K synsets); the weights classify "
     "ImageNet-1K's 1000"),
    ("roadmap.compare_models", "--rows ,", "--rows ',' names no row"),
    ("roadmap.data", "", "the following arguments are required: command"),
    ("roadmap.data", "verify {tmp}/no_such", "argument root: no folder {tmp}/no_such"),
    ("roadmap.data", "verify {tmp}/outputs", "{tmp}/outputs holds neither a train/ folder nor the tar"),
    ("roadmap.fake_imagenet", "tree {tmp}/pets --from {tmp}/pets", "{tmp}/pets already holds files: give a new folder"),
    ("roadmap.fake_imagenet", "tars {tmp}/outputs {tmp}/new_tars", "{tmp}/outputs has no train/ folder"),
    ("run", "+step=gelu +trainer.fast_dev_run=true", "trainer.fast_dev_run is set by the effective run from the "
                                                      "recipe and budget: set budget=smoke"),
    ("run", "+step=gelu +trainer.max_steps=3", "trainer.max_steps is set by the effective run from the recipe and "
                                               "budget: set budget.epoch_scale or budget.limit_train_batches instead"),
    ("run", "+step=gelu +experiment=paper_in1k_1gpu budget=smoke data.root={tmp}",
     "+experiment=paper_in1k_1gpu sets budget.batch_size, budget.accumulate_grad_batches of its budget=paper: with "
     "budget=smoke they would apply to smoke too"),
    ("run", "step=gelu", "step is added with +: +step=gelu"),
    ("run", "+step=GELU", "unknown step 'GELU' (did you mean gelu?)"),
    ("run", "+step=gelu seed", "seed is not an override: write key=value"),
    ("run", "budget=smoke", "no step chosen: add +step=<name>"),
    ("run", "+step=gelu data.root=~/data", "cannot read the override data.root=~/data"),
    # values a library reads: checked by that library before the run
    ("run", "+step=gelu recipe.optimizer.name=adamww", "recipe.optimizer.name=adamww: not one of timm's optimizers; "
                                                       "did you mean adamw"),
    ("run", "+step=gelu recipe.auto_augment=rand-x9", "recipe.auto_augment=rand-x9: timm refuses it"),
    ("run", "+step=gelu recipe.interpolation=bicubik", "recipe.interpolation=bicubik: timm refuses it"),
    ("run", "+step=gelu recipe.interpolation=random", "recipe.interpolation=random: timm refuses it"),
    ("run", "+step=gelu model.in_chans=1", "model.in_chans=1: must be 3"),
    ("run", "+step=gelu model.act=gelux", "model.act=gelux: unknown act 'gelux'"),
    ("run", "+step=gelu model.norm=lnorm", "model.norm=lnorm: unknown norm 'lnorm'"),
    ("run", "+step=gelu trainer.precision=17", "trainer.precision=17: Lightning refuses it"),
    ("run", "+step=gelu trainer.accelerator=gpux", "trainer.accelerator=gpux: not one of Lightning's; did you mean gpu?"),
    ("run", "+step=gelu +trainer.strategy=dpp", "trainer.strategy=dpp: not one of Lightning's; did you mean ddp?"),
    ("run", "+step=gelu trainer.strategy=ddp", "trainer.strategy is an argument of lightning.Trainer that this config "
                                               "does not set: add it with +trainer.strategy=..."),
    ("run", "+step=gelu recipe.schedule=cosin", "recipe.schedule=cosin: must be cosine or step"),
    ("run", "+step=gelu mode=test", "mode=test: must be train or eval"),
    ("run", "+step=gelu seed=abc", "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("run", "+step=gelu budget.batch_size=0", "budget.batch_size=0: must be a positive integer"),
    ("run", "+step=gelu recipe.epochs=-1", "recipe.epochs=-1: must be a positive integer"),
    ("run", "+step=gelu budget.epoch_scale=-1", "budget.epoch_scale=-1.0: must be > 0"),
    ("run", "+step=gelu recipe.label_smoothing=1.5", "recipe.label_smoothing=1.5: must be in [0, 1)"),
    ("run", "+step=gelu recipe.epochs=10", "recipe.warmup_epochs=20 is not shorter than recipe.epochs=10"),
    ("run", "+step=gelu budget.limit_train_batches=2.5", "budget.limit_train_batches=2.5: a fraction is at most 1.0"),
    ("run", "+step=gelu trainer.devices=0", "trainer.devices=0: must be a positive number of devices"),
    ("run", "+step=kernel_11 depthwise=cudnn", "depthwise=cudnn: must be one of auto, native, switch, crop, flip, fft, "
                                               "triton (roadmap/models/depthwise.py)"),
    ("run", "+step=gelu model.kernel_size=4", "kernel_size must be a positive odd integer"),
    ("run", "+step=gelu model.stem=patchfy", "unknown stem 'patchfy'; allowed: resnet, patchify"),
    ("run", "+step=gelu model.act={{_target_:torch.nn.NoSuchAct,_partial_:true}}", "cannot build the model: Error "
                                                                                 "locating target 'torch.nn.NoSuchAct'"),
    ("run", "+step=gelu recipe.optimizer.weight_decay=-1", "recipe.optimizer.weight_decay=-1.0: must be >= 0"),
    ("run", "+step=gelu recipe.grad_clip=-1", "recipe.grad_clip=-1.0: must be > 0 or null"),
    ("run", "+step=gelu data.train_size=0", "data.train_size=0: must be a positive number of images"),
    ("run", "+step=gelu trainer.accelerator=mps", "trainer.accelerator=mps: Lightning finds no such device"),
    ("run", "+step=separate_downsampling data=fashion_mnist data.root={tmp} data.img_size=28",
     "this step needs images of at least 32 px, data.img_size is 28: set data.img_size=32"),
    ("run", "+step=gelu data=cifar10", "data.root is not set: add data.root=... to the command line"),
    ("run", "+step=gelu data=imagefolder data.root=/no/such/dir", "data.root '/no/such/dir' does not exist"),
    # the launcher a trainer file needs, and a device for its accelerator
    ("run", "+step=gelu trainer=torchrun trainer.accelerator=cpu trainer.precision=32-true", "it runs under torchrun"),
    ("run", "+step=gelu trainer=torchrun", "it runs under torchrun"),
    ("run", "+step=gelu trainer=slurm trainer.accelerator=cpu trainer.precision=32-true", "add -m to submit them"),
    ("run", "+step=gelu trainer=slurm", "add -m to submit them"),
    ("run", "+step=gelu trainer.num_nodes=2", "trainer.num_nodes=2 needs a launcher that starts every node"),
    *([] if torch.cuda.is_available() else [  # a machine without CUDA
        ("run", "+step=gelu trainer=gpu", "trainer.accelerator=gpu but no CUDA device is visible: add "
                                          "trainer.accelerator=cpu trainer.precision=32-true")]),
    # paths, weights
    ("run", "+step=gelu run.root={tmp}/a_file", "run.root={tmp}/a_file: {tmp}/a_file is a file, not a folder"),
    ("run", "+step=gelu run.root={tmp}/a_file/out", "{tmp}/a_file is a file, so no folder can be made under it"),
    ("run", "+step=gelu run.dir={tmp}/a_file", "run.dir={tmp}/a_file: {tmp}/a_file is a file, not a folder"),
    ("run", "+step=gelu run.root=/proc/x", "run.root=/proc/x: cannot write in /proc"),
    ("run", "+step=gelu ckpt={tmp}/gelu_run/checkpoints/best.ckpt", "is read by mode=eval only: to start training "
                                                                    "from weights, set model.init_from="),
    ("run", "+step=gelu run.root={tmp}/unreadable_checkpoint", "cannot resume {tmp}/unreadable_checkpoint/"
                                                                "synthetic-cpu_proxy/r50/gelu/seed0: checkpoints/last.ckpt is unreadable"),
    ("run", "+step=gelu mode=eval", "mode=eval needs the weights to evaluate: ckpt="),
    ("run", "+step=gelu mode=eval ckpt=/no/such.ckpt", "no weights file /no/such.ckpt"),
    ("run", "+step=gelu mode=eval ckpt={tmp}/gelu_run/checkpoints/best.ckpt data=imagefolder data.root={tmp}/train_only "
            "data.num_classes=2 recipe.validate=false", "{tmp}/train_only has no val/ split to evaluate on: evaluate on data that has one"),
    ("run", "+step=fewer_activations mode=eval ckpt={tmp}/gelu_run/checkpoints/best.ckpt",
     "holds weights of the gelu run (r50), not of fewer_activations (r50): evaluate them with +step=gelu regime=r50"),
    ("run", "+step=gelu regime=r200 mode=eval ckpt={tmp}/gelu_run/checkpoints/best.ckpt",
     "holds weights of the gelu run (r50), not of gelu (r200)"),
    ("run", "+step=gelu mode=eval model.kernel_size=5 ckpt={tmp}/gelu_run/checkpoints/best.ckpt",
     "was trained with model.kernel_size=7 (this command: 5)"),
    ("run", "+step=gelu model.init_from=/no/such.pth", "no weights file /no/such.pth"),
    ("run", "+step=gelu model.init_from=timm", "no timm model has this step's architecture"),
    ("run", "+step=separate_downsampling model.init_from=timm", "timm's convnext_tiny.fb_in1k weights are not in this "
                                                                "machine's Hugging Face cache"),
    ("run", "+step=original_recipe regime=r200 model.init_from=timm", "timm has no ImageNet-1K weights of resnet200"),
    # a resumed run whose saved config was hand-edited
    ("run", "+step=gelu run.root={tmp}/broken_config", "seed0/config.yaml, line 3 is not readable YAML: restore it, "
                                                       "or run.force=true to start this run over"),
    ("run", "+step=gelu run.root={tmp}/incomplete_config", "seed0/config.yaml is incomplete (ConfigAttributeError: "
                                                           "Missing key recipe): restore it, or run.force=true"),
    # a user's own config files
    ("run", "+step=my_step {user:no_header}", "my_step.yaml: a step file starts with the line '# @package _global_'"),
    ("run", "+step=my_step {user:broken_yaml}", "my_step.yaml, line 5: broken YAML"),
    ("run", "+step=my_step {user:unknown_knob}", "my_step.yaml: model.kernal_size is not a knob of the builder; did "
                                                 "you mean model.kernel_size?"),
    ("run", "+step=my_step {user:no_parent}", "my_step.yaml: its parent step 'kernel_77' (first entry of defaults) "
                                              "does not exist"),
    ("run", "+step=gelu {user:shadow}", "gelu.yaml has the name of the step"),
    ("run", "+step=gelu regime=r18 {user:regime_key}", "r18.yaml: unknown key wide_widht; did you mean wide_width?"),
    ("run", "+step=gelu regime=r18 {user:regime_missing}", "r18.yaml: wide_width is not set"),
    ("run", "+step=gelu data=mine {user:broken_data}", "data/mine.yaml, line 3: broken YAML"),
    ("run", "+step=gelu data=mine {user:data_missing}", "data.index_dir, data.max_bad_fraction, data.verify_images are "
     "not set: add them to their config file (a data file of yours can start from one of conf/data/: defaults: "
     "[<name>, _self_])"),
    ("run", "+step=gelu {user:nowhere}", "ROADMAP_CONFIG_PATH names {tmp}/nowhere, which is not a folder"),
    # the other tools
    ("roadmap.explain", "", "usage: python -m roadmap.explain +step=<name>"),
    ("roadmap.explain", "+step=gelu +recipe.base_lrr=1", "unknown key recipe.base_lrr; did you mean recipe.base_lr?"),
    ("roadmap.explain", "+step=gelu recipe.base_lr=1 recipe.base_lr=2", "recipe.base_lr is given twice"),
    ("roadmap.explain", "+step=my_step {user:unknown_knob}", "model.kernal_size is not a knob of the builder"),
    ("roadmap.explain", "budget=smoke", "no step chosen: add +step=<name>"),
    ("roadmap.sweep", "r999", "argument regime: invalid choice: 'r999'"),
    ("roadmap.sweep", "r50 r200", "unrecognized arguments: r200"),
    ("roadmap.profile", "--img-size 0", "argument --img-size: 0 must be positive"),
    ("roadmap.profile", "--regime family --img-size 16", "convnext_xl needs images of at least 32 px: --img-size 16 is too small"),
    ("roadmap.profile", "--img-size 224px", "argument --img-size: '224px' is not an integer"),
    ("roadmap.profile", "--regime r999", "argument --regime: invalid choice: 'r999'"),
    ("roadmap.profile", "--format xlsx", "argument --format: invalid choice: 'xlsx'"),
    ("roadmap.depthwise_report", "", "the following arguments are required: --step"),
    ("roadmap.depthwise_report", "--step gelu --batch-size 0", "argument --batch-size: 0 must be positive"),
    ("roadmap.depthwise_report", "--step gelu --img-size 0", "argument --img-size: 0 must be positive"),
    ("roadmap.depthwise_report", "--step separate_downsampling --img-size 16", "needs images of at least 32 px"),
    ("roadmap.depthwise_report", "--step gelu2", "unknown step 'gelu2' for regime r50"),
    ("roadmap.depthwise_report", "--step patchify_stem --img-size 32", "patchify_stem (r50) has no depthwise "
                                                                       "convolution: nothing to report; choose a step"),
    ("roadmap.depthwise_report", "--step kernel_7 {env:ROADMAP_CACHE_DIR=a_file}", "cannot store the measured paths "
                                                                                  "in {tmp}/a_file/depthwise.json"),
    ("roadmap.benchmark", "--batch-size -1", "argument --batch-size: -1 must be positive"),
    ("roadmap.benchmark", "--batch-size 0", "argument --batch-size: 0 must be positive"),
    ("roadmap.benchmark", "--img-size 0", "argument --img-size: 0 must be positive"),
    ("roadmap.benchmark", "--img-size 16 --steps separate_downsampling", "needs images of at least 32 px: --img-size 16"),
    ("roadmap.benchmark", "--summary nope", "argument --summary: invalid choice: 'nope'"),
    ("roadmap.benchmark", "--summary paper --train-images 0", "argument --train-images: 0 must be positive"),
    ("roadmap.benchmark", "--repeats 0", "argument --repeats: 0 must be positive"),
    ("roadmap.benchmark", "--data-only --workers 0", "argument --workers: 0 must be positive"),
    ("roadmap.benchmark", "--warmup -1", "argument --warmup: -1 must be >= 0"),
    ("roadmap.benchmark", "--csv /proc/x/b.csv", "argument --csv: cannot write /proc/x/b.csv"),
    ("roadmap.benchmark", "--csv {tmp}", "argument --csv: {tmp} is a folder: give a file name"),
    ("roadmap.benchmark", "--outputs {tmp}/a_file", "argument --outputs: cannot write {tmp}/a_file"),
    ("roadmap.benchmark", "--steps gelu,nope", "unknown step(s) ['nope'] for regime r50"),
    ("roadmap.benchmark", "--device cudaa", "--device cudaa: use auto, cpu, cuda or cuda:N"),
    ("roadmap.benchmark", "--steps gelu data=imagenet", "unknown data 'imagenet'"),
    ("roadmap.benchmark", "--steps gelu recipe.base_lrr=1", "unknown key recipe.base_lrr; did you mean recipe.base_lr?"),
    ("roadmap.benchmark", "--steps gelu data=cifar10", "data.root is not set"),
    ("analysis.roadmap", "{tmp}/no_outputs", "no outputs folder {tmp}/no_outputs"),
    ("analysis.roadmap", "{tmp} --regime r999", "argument --regime: invalid choice: 'r999'"),
    ("analysis.roadmap", "{tmp}/outputs --group nope", "no runs under {tmp}/outputs for group=nope"),
    ("analysis.compare", "{tmp}/no_outputs", "no outputs folder {tmp}/no_outputs"),
    ("analysis.notebook", "{tmp}/no_outputs", "outputs folder {tmp}/no_outputs does not exist"),
]


def _write_data_cases(tmp: Path) -> None:
    """Image folders and tars with one problem each (tiny JPEGs)."""
    rng = np.random.default_rng(0)
    layouts = {"pets": ("cat dog", "cat dog"), "classes_differ": ("cat dog", "bird cat"),
               "extra_val_class": ("cat dog", "cat dog eel"), "truncated_val": ("cat dog", "cat dog"),
               "truncated_train": ("cat dog", "cat dog"), "broken_link": ("cat dog", "cat dog"),
               "train_only": ("cat dog", "")}
    for name, classes in layouts.items():
        for split, names in zip(("train", "val"), classes):
            for c in names.split():
                (tmp / name / split / c).mkdir(parents=True)
                for i in range(2):
                    (tmp / name / split / c / f"{i}.JPEG").write_bytes(fake_jpeg(rng, 40, 30))
    for broken in (tmp / "truncated_val" / "val" / "cat" / "1.JPEG", tmp / "truncated_train" / "train" / "dog" / "1.JPEG"):
        broken.write_bytes(broken.read_bytes()[:200])
    (tmp / "broken_link" / "train" / "cat" / "gone.JPEG").symlink_to(tmp / "nowhere.JPEG")
    write_tars(tmp / "pets", tmp / "tars")
    with tarfile.open(tmp / "tars" / "flat.tar", "w") as flat:
        flat.add(tmp / "pets" / "train" / "cat" / "0.JPEG", arcname="0.JPEG")
    (tmp / "tars" / "text.tar").write_text("not a tar")
    with tarfile.open(tmp / "tars" / "train.tar.gz", "w:gz") as packed:
        packed.add(tmp / "pets" / "train" / "cat", arcname="cat")


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """Every case of :data:`CASES`, run by tests/command_runner.py in two processes (the training stack's tools in
    one, run.py in the other), keyed by the case."""
    tmp = tmp_path_factory.mktemp("refusals")
    (tmp / "a_file").write_text("not a folder")
    (tmp / "outputs").mkdir()
    for split in ("train", "val"):
        (tmp / "no_images" / split / "cat").mkdir(parents=True)
    _write_data_cases(tmp)
    gelu = write_run(tmp / "outputs", "synthetic-smoke", "r50", "gelu")  # a finished run's record, config, weights
    (gelu / "checkpoints").mkdir()
    (gelu / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    (gelu / "config.yaml").write_text(yaml.safe_dump({"model": {"kernel_size": 7, "act": "gelu"}}))
    export(RoadmapNet(depths=(1, 1, 1, 1), width=8).state_dict(), gelu / "weights" / "final.safetensors")
    rng = np.random.default_rng(1)
    for synset in ImageNetInfo().label_names():  # ImageNet-1K's val classes, one image in the first
        (tmp / "imagenet1k" / "val" / synset).mkdir(parents=True)
    (tmp / "imagenet1k" / "val" / "n01440764" / "0.JPEG").write_bytes(fake_jpeg(rng, 40, 30))
    (tmp / "foreign").mkdir()
    torch.save({"head.fc.weight": torch.zeros(2, 2)}, tmp / "foreign" / "convnext_t.pth")
    (tmp / "gelu_run").symlink_to(gelu)
    cut_short = tmp / "unreadable_checkpoint" / "synthetic-cpu_proxy" / "r50" / "gelu" / "seed0" / "checkpoints"
    cut_short.mkdir(parents=True)
    (cut_short / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")  # a checkpoint whose write was cut short
    for name, text in (("broken_config", "seed: 0\nmodel: [unclosed\n"), ("incomplete_config", R50_CONFIG)):
        saved = tmp / name / "synthetic-cpu_proxy" / "r50" / "gelu" / "seed0" / "config.yaml"
        saved.parent.mkdir(parents=True)
        saved.write_text(text)
    for folder, files in USER_FOLDERS.items():
        for relative, text in files.items():
            (tmp / folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp / folder / relative).write_text(text)
    cases = []
    for i, (tool, args, _) in enumerate(CASES):
        argv = [a.format(tmp=tmp) for a in args.split() if not a.startswith(("{user:", "{env:"))]
        env = {CONFIG_PATH_ENV: str(tmp / a[6:-1]) for a in args.split() if a.startswith("{user:")}
        env.update((a[5:-1].split("=")[0], str(tmp / a[5:-1].split("=")[1])) for a in args.split() if a.startswith("{env:"))
        root = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("run.root=")), tmp / "roots" / str(i))
        if tool == "run":
            argv += [*([] if any(a.startswith(("run.root=", "run.dir=")) for a in argv) else [f"run.root={root}"]),
                     "logger=csv"]
        before = sorted([str(root), *(str(p) for p in root.rglob("*"))]) if root.exists() else []
        cases.append({"tool": tool, "argv": argv, "env": env, "root": str(root), "before": before})
    answers = {}
    for part in (lambda c: c["tool"] == "run", lambda c: c["tool"] != "run"):
        mine = [c for c in cases if part(c)]
        results = run_commands(mine, tmp, env={"HF_HUB_CACHE": str(tmp / "empty_hub_cache")})
        answers.update({json.dumps(c): r for c, r in zip(mine, results)})
    return tmp, cases, answers


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{tool}: {args}" for tool, args, _ in CASES])
def test_bad_input_is_refused_in_one_line_before_any_work(answers, index):
    tmp, cases, results = answers
    case, message = cases[index], CASES[index][2].format(tmp=tmp)
    got = results[json.dumps(case)]
    shown = got["stderr"].strip()
    assert got["code"] == 2, got
    assert "Traceback" not in got["stderr"] and len(shown.splitlines()) == 1, shown
    assert shown.startswith(("error: ", "usage: ")) and message in shown, shown
    assert got["stdout"] == "", got["stdout"]
    assert got["left"] == case["before"], got["left"]  # no run folder, record or group folder made
