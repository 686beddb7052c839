"""Table 1 side by side (roadmap.compare_models): every row's GFLOPs against the paper's, and the tool on a few small
rows with a tiny batch, weights from a folder and an ImageNet-layout val folder."""
import shutil

import pandas as pd
import pytest
import timm
import torch
from timm.data import ImageDataset, ImageNetInfo, create_transform, resolve_data_config

from roadmap import compare_models
from roadmap.compare_models import TABLE_1, build
from roadmap.fake_imagenet import write_jpegs
from roadmap.models.shapes import count_gflops, count_params_m


def test_every_rows_gflops_and_params_are_the_papers_or_say_why():
    for row in TABLE_1:
        model = build(row, "meta")
        gflops = count_gflops(model, row.img_size)
        assert count_params_m(model) == pytest.approx(row.params_m, abs=0.02 * row.params_m + 0.5), row.label
        if row.key in compare_models.GFLOPS_NOTES:
            assert abs(gflops / row.gflops - 1) > 0.02, f"{row.label} agrees now: drop its note"
        else:
            assert gflops == pytest.approx(row.gflops, rel=0.02), row.label


def test_compare_models_on_small_rows_with_a_weights_folder_and_a_val_folder(tmp_path, capsys):
    write_jpegs(tmp_path / "jpegs", classes=3, train_per_class=1, val_per_class=2)
    synsets = ImageNetInfo().label_names()  # ImageNet-1K's val layout, images in 3 of its 1,000 class folders
    for i, synset in enumerate(synsets):
        folder = tmp_path / "imagenet" / "val" / synset
        folder.mkdir(parents=True)
        if i < 3:
            for image in sorted((tmp_path / "jpegs" / "val").iterdir())[i].iterdir():
                shutil.copy(image, folder / image.name)
    reference = timm.create_model("convnext_tiny").eval()
    (tmp_path / "weights").mkdir()
    torch.save(reference.state_dict(), tmp_path / "weights" / "convnext_t.pth")
    out = tmp_path / "out"
    compare_models.main(["--rows", "convnext_t,swin_t,deit_s", "--batch-size", "2", "--warmup", "0", "--repeats", "1",
                         "--val", str(tmp_path / "imagenet"), "--weights", str(tmp_path / "weights"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "HARDWARE: measured here on" in printed and "ConvNeXt-T / Swin-T" in printed
    table = pd.read_csv(out / "table.csv").set_index("model")
    assert (table.img_s > 0).all() and table.gflops_agree.all()
    assert "no swin_t.safetensors or swin_t.pth in" in table.loc["Swin-T", "why_not"]
    # ConvNeXt-T's top-1 is timm's convnext_tiny's with these weights, on the same images and transform
    config = resolve_data_config({"input_size": (3, 224, 224)},
                                 pretrained_cfg=timm.models.get_pretrained_cfg("convnext_tiny.fb_in1k").to_dict())
    images = ImageDataset(str(tmp_path / "imagenet" / "val"), transform=create_transform(**config),
                          class_map={name: i for i, name in enumerate(synsets)})
    with torch.inference_mode():
        predicted = [reference(x[None]).argmax(1).item() for x, _ in images]
    expected = 100 * sum(p == y for p, (_, y) in zip(predicted, images)) / len(images)
    assert table.loc["ConvNeXt-T", "top1"] == pytest.approx(expected)
    assert pd.read_csv(out / "ratios.csv").pair.tolist() == ["ConvNeXt-T / Swin-T"]
    assert (out / "figure1.png").stat().st_size > 10_000


def test_the_hub_is_offline_before_anything_imports_it():
    """Nothing is downloaded at run time: importing the project sets HF_HUB_OFFLINE before huggingface_hub reads it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    probe = "import roadmap, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "True", out.stderr[-1000:]
