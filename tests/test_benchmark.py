"""The throughput benchmark runs end to end on a tiny configuration (numbers are shown, never asserted)."""
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from roadmap.benchmark import main


def test_benchmark_runs_steps_references_and_data_pipeline(tmp_path, capsys):
    csv = tmp_path / "bench.csv"
    df = main(["--img-size", "32", "--batch-size", "2", "--warmup", "1", "--repeats", "1", "--data-batches", "2",
               "--steps", "separate_downsampling,original_recipe", "--csv", str(csv), "--summary"])
    printed = capsys.readouterr().out
    assert "timm convnext_tiny" in printed and f"wrote {csv}" in printed
    assert df.equals(pd.read_csv(csv).astype(df.dtypes.to_dict()))
    steps = df[df.model == "roadmap"]
    assert steps.step.tolist() == ["original_recipe", "separate_downsampling"]  # roadmap order
    assert steps.timm_model.tolist() == ["resnet50", "convnext_tiny"]
    references = df[df.model.str.startswith("timm ")]
    assert references.params_m.tolist() == steps.params_m.tolist()  # the same architectures are compared
    for column in ("infer_img_s", "train_img_s", "infer_ratio", "train_ratio"):
        assert all(v > 0 and math.isfinite(v) for v in steps[column])
    data_row = df[df.model.str.startswith("data loader per core (synthetic, recipe convnext, 2 workers)")]
    assert len(data_row) == 1 and data_row.train_img_s.iloc[0] > 0
    # --summary: each step's recipe length at the paper budget × ImageNet-1K at the measured images/s
    assert steps.epochs.tolist() == [90, 300]
    expected = steps.epochs * (1_281_167 / steps.train_img_s + 50_000 / steps.infer_img_s) / 3600
    assert steps.sweep_h.tolist() == pytest.approx(expected.tolist())
    line = next(line for line in printed.splitlines() if line.startswith("sweep cost at budget paper: 2 r50 steps"))
    assert f"{steps.sweep_h.sum():,.0f} device-hours" in line and "epochs 90–300" in line
    # and the loader cores each step needs at its measured rate, against the budget's 10 workers per device
    assert steps.data_cores.tolist() == [math.ceil(r / data_row.train_img_s.iloc[0]) for r in steps.train_img_s]
    assert steps.data_fed.tolist() == [c <= 10 for c in steps.data_cores]
    assert "budget paper gives 10 workers per device" in printed
    assert "measured at 32px, not the paper's 224px: the hours above are at that size" in printed


def test_data_only_times_the_loader_beside_timms_and_the_decode_floor(tmp_path, capsys):
    from roadmap.fake_imagenet import write_jpegs

    root = write_jpegs(tmp_path / "data", classes=2, train_per_class=12, val_per_class=1, size=(64, 48))
    df = main(["--data-only", "--workers", "1", "--batch-size", "4", "--data-batches", "2", "--repeats", "1",
               "--img-size", "32", "--csv", str(tmp_path / "data.csv"), "data=imagefolder", f"data.root={root}",
               "data.num_classes=2"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "data.csv"), df, check_dtype=False)  # --csv holds it too
    assert df.path.tolist() == ["ours (imagefolder, recipe convnext)", "timm create_loader (use_prefetcher)",
                                "decode floor (one thread, no augmentation)"]
    assert all(df.img_s > 0) and df.vs_timm.iloc[0] > 0 and 0 < df.of_decode_floor.iloc[0]
    assert "data benchmark: imagefolder at 32px" in capsys.readouterr().out


def test_benchmark_rejects_an_unknown_step(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--steps", "kernel_13"])
    assert exit_info.value.code == 2
    assert "unknown step(s) ['kernel_13']" in capsys.readouterr().err


def test_depthwise_report_shows_every_case_of_one_iteration_and_retunes(tmp_path, monkeypatch, capsys):
    """One training iteration of kernel_11 at 16 px, batch 2: a row per depthwise case it runs, each with its
    chosen path among the timed ones; ``--retune`` measures every case again (a stand-in timer: the rows'
    plumbing is tested here, the timing in tests/test_depthwise.py)."""
    from roadmap import depthwise_report
    from roadmap.models import depthwise

    monkeypatch.setenv("ROADMAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(depthwise, "AUTOTUNER", depthwise.AUTOTUNER)  # the report replaces it: restored after
    measured = []
    monkeypatch.setattr(depthwise, "stable_seconds", lambda fn, **timing: (measured.append(fn()), (1e-3, 1e-5, 4))[1])
    args = ["--step", "kernel_11", "--batch-size", "2", "--img-size", "16", "--device", "cpu"]
    df = depthwise_report.main(args)
    printed = capsys.readouterr().out
    assert set(df.op) == {"forward", "grad_input", "grad_weight"}
    assert (df.k == 11).all() and set(df.stride) == {1, 2} and df.calls.sum() == 3 * 18  # blocks (3, 3, 9, 3)
    assert all(row[row.chosen] == "1.000 ± 0.010" for _, row in df.iterrows())
    assert (df.crop != "").all()  # 11×11 on stages of 4×4 to 1×1: taps that only meet padding
    assert all(f"{op}: " in printed for op in ("forward", "grad_input", "grad_weight"))
    first = len(measured)
    depthwise_report.main(args)
    assert len(measured) == first  # read from the store
    depthwise_report.main([*args, "--retune"])
    assert len(measured) == 2 * first


def test_depthwise_report_rejects_an_unknown_step(capsys):
    from roadmap.depthwise_report import main as report

    with pytest.raises(SystemExit) as exit_info:
        report(["--step", "kernel_13"])
    assert exit_info.value.code == 2 and "unknown step 'kernel_13' for regime r50" in capsys.readouterr().err


def test_device_cuda_without_a_gpu_is_one_line(capsys):
    """Both CLIs resolve ``--device`` through ``roadmap.utils.devices.chosen_device``."""
    import torch

    from roadmap.depthwise_report import main as report

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    for cli, args in ((main, ["--device", "cuda"]), (report, ["--step", "kernel_7", "--device", "cuda"])):
        with pytest.raises(SystemExit) as exit_info:
            cli(args)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == "error: --device cuda but no CUDA device is visible; use --device cpu"


def test_the_timer_on_a_cpu_machine_prints_no_cuda_advice():
    """torch's timer imports its extension builder, which warns about CUDA_HOME where no CUDA runtime is: not here."""
    code = "from roadmap.utils.timing import median_seconds; median_seconds(lambda: 1, warmup=1, repeats=1)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "CUDA_HOME": "/usr/local"})  # where torch finds no runtime and says so
    assert proc.returncode == 0 and "CUDA" not in proc.stderr + proc.stdout, proc.stderr
