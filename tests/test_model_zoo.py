"""The model zoo: every step's GFLOPs against Tables 10/11, weight compatibility with the reference
implementations, forward/backward of every step, and one-line errors for bad knobs."""
import csv
import io

import pytest
import timm
import torch
import torchvision

from roadmap import ConfigError, build_model, list_steps
from roadmap.config.steps import compose_config
from roadmap.models.depthwise import set_depthwise_impl
from roadmap.models.key_maps import load_reference_weights
from roadmap.models.shapes import count_gflops, count_params_m

ALL_STEPS = [(regime, info.name) for regime in ("r50", "r200") for info in list_steps(regime)]


def meta_model(step, regime, **overrides):
    with torch.device("meta"):
        return build_model(step, regime, **overrides)


def test_roadmap_order_and_branches():
    names = [s.name for s in list_steps("r50")]
    assert names[:3] == ["original_recipe", "modern_recipe", "stage_ratio"]
    assert names[-1] == "separate_downsampling" and len(names) == 17
    assert [s.name for s in list_steps("r200")] == names
    branches = {s.name for s in list_steps("r50") if not s.adopted}
    assert branches == {"kernel_5", "kernel_9", "kernel_11"}


@pytest.mark.parametrize("regime,step", ALL_STEPS, ids=[f"{r}-{s}" for r, s in ALL_STEPS])
def test_gflops_match_paper(regime, step):
    paper = {s.name: s.paper_gflops for s in list_steps(regime)}[step]
    measured = count_gflops(meta_model(step, regime))
    if (regime, step) == ("r50", "bn_to_ln"):
        # Paper inconsistency (Table 10 says 4.46, Fig. 2 says 4.2): swapping BN for LN changes no
        # conv or linear layer, so the count must equal the previous step's.
        assert measured == pytest.approx(count_gflops(meta_model("fewer_norms", regime)), abs=1e-9)
        assert measured == pytest.approx(4.15, abs=0.01)
    elif (regime, step) == ("r50", "separate_downsampling"):
        # Table 10 says 4.49; counting conv+linear gives ConvNeXt-T's 4.456 (Table 9 rounds to 4.5).
        with torch.device("meta"):
            reference = timm.create_model("convnext_tiny")
        assert measured == pytest.approx(count_gflops(reference), abs=1e-6)
        assert measured == pytest.approx(4.456, abs=0.005)
    else:
        assert measured == pytest.approx(paper, abs=0.01)


def _randomize(model):
    """Random weights *and* BN statistics, so that every mapped tensor matters for the logits."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point():
                noise = torch.rand(t.shape, generator=gen) if t.ndim == 1 else torch.randn(t.shape, generator=gen)
                t.copy_(0.5 + 0.5 * noise if t.ndim == 1 else 0.05 * noise)
    return model.eval()


REFERENCES = [  # the end points as the roadmap builds them (row 0: torchvision's ResNet; the last row: ConvNeXt)
    ("torchvision-resnet50", lambda: torchvision.models.resnet50(), "original_recipe", "r50"),
    ("timm-resnet50", lambda: timm.create_model("resnet50"), "original_recipe", "r50"),
    ("timm-resnet200", lambda: timm.create_model("resnet200"), "original_recipe", "r200"),
    ("timm-convnext_tiny", lambda: timm.create_model("convnext_tiny"), "separate_downsampling", "r50"),
    ("timm-convnext_base", lambda: timm.create_model("convnext_base"), "separate_downsampling", "r200"),
]


@pytest.mark.parametrize("make_ref,step,regime", [r[1:] for r in REFERENCES], ids=[r[0] for r in REFERENCES])
def test_end_points_load_reference_weights(make_ref, step, regime):
    reference = _randomize(make_ref())
    ours = build_model(step, regime).eval()  # as the step trains: ConvNeXt's layer scale γ included
    assert count_params_m(ours) == count_params_m(reference)
    load_reference_weights(ours, reference.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.abs().mean() > 1e-2  # the comparison is not between two near-zero outputs
    assert (got - expected).abs().max() < 1e-4


def test_paper_convnext_is_timms_convnext_tiny():
    """The last r50 step under the paper's budget: timm's convnext_tiny, γ = 1e-6, strict state-dict load."""
    ours = build_model("separate_downsampling", overrides=["budget=paper"])
    reference = timm.create_model("convnext_tiny")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    assert all(torch.all(b.gamma == 1e-6) for stage in ours.stages for b in stage.blocks)
    load_reference_weights(ours, reference.state_dict())  # strict: every key and shape


def test_row_0_starts_as_torchvisions_resnet50():
    """Kaiming-normal fan-out convs (std √(2/fan_out)), BN γ=1 β=0, PyTorch's default Linear: torchvision's init."""
    torch.manual_seed(0)
    ours, reference = build_model("original_recipe"), torchvision.models.resnet50()
    mapped = dict(zip(ours.state_dict(), reference.state_dict()))  # same order, same shapes
    theirs = reference.state_dict()
    for ours_key, tensor in ours.state_dict().items():
        ref = theirs[mapped[ours_key]]
        assert tensor.shape == ref.shape, ours_key
        if tensor.ndim == 4:
            fan_out = tensor.shape[0] * tensor.shape[2] * tensor.shape[3]
            assert tensor.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1), ours_key
            assert tensor.std().item() == pytest.approx(ref.std().item(), rel=0.1), ours_key
        elif ours_key.endswith(("1.weight", "shortcut.1.weight")) and tensor.ndim == 1:
            assert torch.all(tensor == 1), ours_key
    fc_bound = 1 / ours.fc.in_features ** 0.5  # PyTorch's default Linear init: U(±1/√fan_in)
    assert ours.fc.weight.abs().max() <= fc_bound and ours.fc.weight.std() > 0.5 * fc_bound / 3 ** 0.5
    convnext_init = build_model("stage_ratio").stages[0].blocks[0].convs[0][0].weight
    assert convnext_init.std().item() == pytest.approx(0.02, rel=0.15)  # from stage_ratio on: trunc-normal(.02)


@pytest.mark.parametrize("step", [s.name for s in list_steps("r50")])
def test_every_step_forward_backward(step):
    """Every step builds, runs and reaches every parameter; on plain nn.Conv2d (depthwise=native): the paths
    and their choice are tests/test_depthwise.py's. On r50: r200's steps are the same modules at other depths and
    widths (its regime file), each built and counted by test_gflops_match_paper."""
    model = build_model(step, "r50", num_classes=7, in_chans=1, drop_path_rate=0.1, layer_scale_init=1e-6)
    set_depthwise_impl(model, "native")
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_layer_scale_and_drop_path_reach_the_blocks():
    model = build_model("separate_downsampling", drop_path_rate=0.3, layer_scale_init=1e-6)
    blocks = [b for stage in model.stages for b in stage.blocks]
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates == pytest.approx([0.3 * i / (len(blocks) - 1) for i in range(len(blocks))])
    assert all(torch.all(b.gamma == 1e-6) for b in blocks)


@pytest.mark.parametrize("overrides,message", [
    ({"kernel_size": 4}, "kernel_size must be a positive odd integer"),
    ({"kernel_size": 0}, "kernel_size must be a positive odd integer"),
    ({"kernel_size": -3}, "kernel_size must be a positive odd integer"),
    ({"depths": [3, 3, 9]}, "depths must be 4 positive integers"),
    ({"norm": "gn"}, "unknown norm 'gn'; use bn, ln, group, a timm norm name"),
    ({"act": "swishy"}, "unknown act 'swishy'; use relu, gelu, a timm activation name"),
    ({"init": "xavier"}, "unknown init 'xavier'; allowed: torchvision, convnext"),
    ({"block_acts": [True]}, "block_acts needs one true/false per block conv"),
    ({"kernel": 7}, "unknown model knob(s) ['kernel']; known: depths"),
])
def test_bad_knobs_give_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_model("kernel_7", **overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_init_from_timm_takes_the_papers_weights_from_the_local_cache_only(tmp_path, monkeypatch):
    """``model.init_from=timm`` for ConvNeXt-T reads convnext_tiny.fb_in1k (not timm's default tag, an ImageNet-12k
    training) from the Hugging Face cache on disk: random weights stand in for it, and there is no network here."""
    import huggingface_hub
    from safetensors.torch import save_file

    reference = timm.create_model("convnext_tiny")
    repo = tmp_path / "hub" / "models--timm--convnext_tiny.fb_in1k"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(reference.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = build_model("separate_downsampling", overrides=["model.init_from=timm"])
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.eval()(x), reference.eval()(x), atol=1e-5)
    with pytest.raises(ConfigError, match=r"^timm's resnet50.tv_in1k weights are not in this machine's Hugging Face "
                                          r"cache \(timm/resnet50.tv_in1k\)"):
        build_model("original_recipe", overrides=["model.init_from=timm"])


def test_the_model_config_names_every_argument_of_the_builder():
    """conf/model/roadmap.yaml is the model's key schema (roadmap.config.schema): it must be the builder's arguments."""
    import inspect

    from roadmap.config.files import builder_arguments
    from roadmap.models.net import RoadmapNet

    assert set(builder_arguments()) == {"_target_", "init_from", *inspect.signature(RoadmapNet).parameters}


def test_unknown_step_and_regime():
    with pytest.raises(ConfigError, match=r"unknown step 'kernel_8' \(did you mean kernel_9\?\); valid steps: .*kernel_7"):
        build_model("kernel_8")
    with pytest.raises(ConfigError, match=r"unknown regime 'r101'; valid regimes: family, r200, r50 \(or add regime/r101.yaml to "
                                          r"conf/ or \$ROADMAP_CONFIG_PATH\)"):
        build_model("gelu", regime="r101")
    with pytest.raises(ConfigError, match=r"^unknown key model.no_such_knob: no config has it$"):
        compose_config("gelu", overrides=["model.no_such_knob=1"])


def test_profile_cli_csv(capsys):
    """The command line's CSV (every regime's numbers: test_gflops_match_paper, tests/test_family.py; the command in
    a process of its own: the README's, tests/test_readme.py), on the shortest regime."""
    from roadmap.profile import main as profile

    profile(["--regime", "family", "--format", "csv"])
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["step"] for r in rows] == [s.name for s in list_steps("family")]
    assert {"step", "change", "gflops", "params_m", "paper_gflops"} <= set(rows[0])
    assert float(rows[2]["gflops"]) == pytest.approx(15.35, abs=0.01)  # convnext_b
