"""Table 1 side by side (roadmap.compare_models): every row's GFLOPs against the paper's, and the tool on a few small
rows with a tiny batch, weights from a folder and an ImageNet-layout val folder."""
import shutil

import pandas as pd
import pytest
import timm
import torch
from timm.data import ImageDataset, ImageNetInfo, create_transform, resolve_data_config

from roadmap import compare_models
from roadmap.compare_models import TABLE_1, Timings
from roadmap.fake_imagenet import write_jpegs


def test_every_rows_gflops_and_params_are_the_papers_or_say_why():
    for row, (params_m, gflops) in zip(TABLE_1, compare_models.count(TABLE_1).values()):
        assert params_m == pytest.approx(row.params_m, abs=0.02 * row.params_m + 0.5), row.label
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
    compare_models.main(["--rows", "convnext_t,swin_t,deit_s", "--batch-size", "2", "--warmup", "0", "--repeats", "2",
                         "--val", str(tmp_path / "imagenet"), "--weights", str(tmp_path / "weights"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "HARDWARE: measured here on" in printed and "ConvNeXt-T / Swin-T" in printed
    # a progress line for each model's first visit, with the time left, and one for the second round
    progress = [line for line in printed.splitlines() if " left" in line]
    assert [line.split("]")[0].strip() for line in progress[:3]] == ["[ 1/3", "[ 2/3", "[ 3/3"], printed
    assert len(progress) == 4 and progress[3].startswith("  round 2 of 2 done; about"), printed
    table = pd.read_csv(out / "table.csv").set_index("model")
    assert (table.img_s > 0).all() and table.gflops_agree.all()
    assert "no swin_t.safetensors or swin_t.pth in" in table.loc["Swin-T", "notes"]
    # the notes are footnotes: the table's rows stay narrow
    text = (out / "table.md").read_text()
    assert max(len(line) for line in text.splitlines() if line.startswith("|")) < 120, text
    assert "[1] top-1: no swin_t.safetensors" in text and "82.1" in text, text
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
    assert (out / "figure1.png").stat().st_size > 10_000  # both panels, every row: figure_table
    assert "Not measured" not in text and "measured here" in text


def test_timing_visits_every_model_in_rounds_with_one_model_in_memory(monkeypatch):
    """Rounds alternate over the models (a busy machine's drift hits them alike); a model is freed before the next
    one is made, and only the first visit builds it as timm does."""
    import gc
    import weakref

    live, visits = [], []

    def tracked(make):
        def wrapper(row, device, *args):
            model = make(row, device, *args)
            if str(device) != "meta":
                gc.collect()
                visits.append((row.key, make.__name__))
                assert not [m for m in live if m() is not None], f"another model is alive while {row.key} is made"
                live.append(weakref.ref(model))
            return model
        return wrapper

    monkeypatch.setattr(compare_models, "build", tracked(compare_models.build))
    monkeypatch.setattr(compare_models, "refill", tracked(compare_models.refill))
    # timm's test models: a relative-position ViT (index buffers, as Swin's) and an EfficientNet (batch norm)
    rows = [compare_models.Row("vit", "ViT", "test_vit_relpos", 160, 1, 1, None, 80, None),
            compare_models.Row("effnet", "EffNet", "test_efficientnet", 160, 1, 1, None, 80, None)]
    lines = []
    timings = compare_models.time_rows(rows, {"vit": 1, "effnet": 1}, torch.device("cpu"), batch_size=1, warmup=1,
                                       repeats=3, log=lines.append)
    assert visits == [("vit", "build"), ("effnet", "build"), *[("vit", "refill"), ("effnet", "refill")] * 2]
    assert all(len(t) == 3 and min(t) > 0 for t in timings.seconds.values())
    assert len(lines) == 1 + 2 + 2, lines  # the plan, a line per model's first visit, one per later round
    # a refilled model has the built one's buffers, and computes with them
    monkeypatch.undo()
    torch.manual_seed(0)
    built = compare_models.build(rows[0])
    refilled = compare_models.refill(rows[0], torch.device("cpu"), dict(built.named_buffers()))
    assert all(torch.equal(b, dict(built.named_buffers())[n]) for n, b in refilled.named_buffers())
    with torch.inference_mode():
        assert refilled(torch.randn(1, 3, 160, 160)).isfinite().all()


def test_weights_of_another_model_are_refused_before_any_timing(tmp_path, monkeypatch):
    (tmp_path / "weights").mkdir()
    torch.save({"head.weight": torch.zeros(2, 2)}, tmp_path / "weights" / "deit_s.pth")

    def no_timing(*args, **kwargs):
        raise AssertionError("timed before the weights were checked")
    monkeypatch.setattr(compare_models, "time_rows", no_timing)
    with pytest.raises(compare_models.ConfigError, match=r"deit_s.pth does not hold DeiT-S's weights"):
        compare_models.compare([compare_models.ROWS["deit_s"]], "cpu", val=tmp_path, weights=str(tmp_path / "weights"))


def test_unreliable_timings_say_why():
    rows = [compare_models.ROWS["convnext_t"], compare_models.ROWS["swin_t"]]
    steady = {rows[0].model: [1.0, 1.05, 1.0], rows[1].model: [2.0, 2.0, 2.1]}
    assert Timings(steady, cpu_share=0.97).unreliable(rows) == ""
    assert Timings(steady, cpu_share=None).unreliable(rows) == ""  # a GPU: no share
    busy = Timings({**steady, rows[1].model: [2.0, 3.0, 2.1]}, cpu_share=0.55).unreliable(rows)
    assert "got 55 % of its" in busy and "Swin-T's 3 timed batches spread 48 %" in busy, busy


def test_figure_1_has_the_papers_two_panels_without_overlapping_text():
    """Every row drawn where Figure 1 puts it (1K at 224², EfficientNets at their size; 22K at 384²), with measured
    top-1 on some rows, and no text box over another."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tests.test_chart import _layout_problems

    table = pd.DataFrame([{"model": r.label, "pretrain": r.pretrain, "img_size": r.img_size, "gflops": r.gflops,
                           "paper_top1": r.top1, "top1": r.top1 - 0.4 if r.key.startswith("convnext") else None}
                          for r in TABLE_1])
    fig = compare_models.figure_1(table)
    FigureCanvasAgg(fig)  # a renderer to measure the text with
    left, right = fig.axes
    assert "1K" in left.get_title() and "22K" in right.get_title()
    drawn = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"RegNetY-16G", "EffNet-B7 600²", "EffNetV2-L 480²", "DeiT-S", "ConvNeXt-L"} <= {t.get_text() for t in left.texts}
    assert {"ConvNeXt-XL", "Swin-L", "ConvNeXt-T"} <= {t.get_text() for t in right.texts}, drawn
    assert _layout_problems(fig) == []
    assert "top-1 measured here (hollow)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_the_hub_is_offline_before_anything_imports_it():
    """Nothing is downloaded at run time: importing the project sets HF_HUB_OFFLINE before huggingface_hub reads it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    probe = "import roadmap, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "True", out.stderr[-1000:]
