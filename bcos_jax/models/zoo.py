"""The zoo's metadata, kept apart from the architectures: weights, published figures, notes.

``ZOO`` maps a model name to a ``ZooEntry``; ``bcos_jax.models`` joins it to the family
files' ``ARCHITECTURES`` by name (``registry.join``), so ``get_spec(name)`` has both. The
architecture code never needs to know where weights live or what accuracy was published.

Where the figures come from:

* ``params``: the exact parameter count of the reference module (``bcos`` 0.1.3 for B-cos
  v2 models, the v1 modules of moboehle/B-cos, torchvision 0.29 for ``standard_*``),
  checked against the reference *and* this implementation by the per-family tests
  (tests/test_models_*.py) and used for docs/MODELS.md (tests/test_models_table.py).
* ``top1``: ImageNet top-1 (single 224 crop) as published by the B-cos v2 model zoo
  (B-cos/B-cos-v2: README.md and bcos/models/pretrained.py docstrings), torchvision's
  published figure of its own weights for ``standard_*``; CIFAR-10 test accuracy for the v1
  9L networks as hard-coded in moboehle/B-cos: "Quantitative results.ipynb". None when
  nothing was published (docs/recipes.md §8 and §9 list the published figures).
* ``weights_url``: v2 weights of ``bcos.models.pretrained.URLS`` (the B-cos-v2 release
  ``v0.0.1-weights``), v1 weights from the links in moboehle/B-cos
  ``experiments/Imagenet/bcos/experiment_parameters.py`` and the 9L notebook above,
  torchvision's published weights for ``standard_*``.

A new zoo model gets one entry here (at least ``params``) beside its ``Architecture``.
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping, Optional

__all__ = ["BCOSIFICATION_RELEASE", "TORCHVISION", "V1_RELEASE", "V2_RELEASE", "ZOO", "ZooEntry"]

V2_RELEASE = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
V1_RELEASE = "https://nextcloud.mpi-klsb.mpg.de/index.php/s"
TORCHVISION = "https://download.pytorch.org/models"
# The release page of the B-cosified ImageNet checkpoints (shrebox/B-cosification: README.md);
# the repository names the page, not the files on it.
BCOSIFICATION_RELEASE = "https://github.com/shrebox/B-cosification/releases/tag/v0.0.1-checkpoints"


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """What is known about a zoo model beyond its architecture.

    Attributes:
      params: parameter count of the reference module (None: not yet recorded; the zoo
        tests require it for every model).
      top1: published top-1 accuracy of the official weights, in % (None if unpublished).
      weights_url: where the official weights are published (None if not released).
      notes: free text for the model tables (what the reference entry point builds).
    """

    params: Optional[int] = None
    top1: Optional[float] = None
    weights_url: Optional[str] = None
    notes: str = ""


# Notes shared by several models.
_NOTES = {
    "resnet_cifar": (
        "bcos.models.resnet constructor defaults (NoBias(PositionNorm), max_out=1); the paper's "
        "CIFAR ablation uses max_out=2 and norm=<CIFAR_NORMS name>"
    ),
    "resnet_bcos_final": (
        "bcos.models.pretrained entry point (bcos_final): NoBias(BatchNormUncentered2d)"
    ),
    "resnet_bare": (
        "bare bcos.models.resnet constructor (no config, no weights): "
        "NoBias(DetachablePositionNorm2d); pass norm=... for BNU"
    ),
    "resnet_long": "bcos_final_long: BNU, stochastic depth 0.1",
    "densenet_cifar": "NoBias(PositionNorm) (bcos.models.densenet default); no released weights",
    "densenet_bcos_final": "NoBias(BatchNormUncentered) (bcos_final)",
    "densenet_torchvision": "torchvision DenseNet; top1 of torchvision's IMAGENET1K_V1 weights",
    "densenet_v1": "MaxOut 2, scale_fact 100, T=1e-3; only DenseNet-121 has a v1 config/weights",
    "vgg_torchvision": "torchvision VGG",
    "vgg_torchvision_bn": "torchvision VGG with BatchNorm",
    "vgg_v1": "MaxOut 2, scale_fact 1000, T=0.1 (VGG-11 config)",
    "vgg": "no norm (bcos.models.vgg)",
    "vgg_bnu": "NoBias(BatchNormUncentered) after every conv",
}

ZOO: Mapping[str, ZooEntry] = MappingProxyType({
    # resnet
    "cifar10_resnet110": ZooEntry(
        params=1_726_992,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnet20": ZooEntry(
        params=272_112,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnet32": ZooEntry(
        params=466_096,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnet44": ZooEntry(
        params=660_080,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnet56": ZooEntry(
        params=854_064,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext101_16x8d": ZooEntry(
        params=1_112_944,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext101_32x4d": ZooEntry(
        params=1_046_416,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext29_16x64d": ZooEntry(
        params=68_106_688,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext29_16x8d": ZooEntry(
        params=320_880,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext29_32x4d": ZooEntry(
        params=302_736,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext29_8x64d": ZooEntry(
        params=34_399_680,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext47_16x8d": ZooEntry(
        params=518_896,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext47_32x4d": ZooEntry(
        params=488_656,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext65_16x8d": ZooEntry(
        params=716_912,
        notes=_NOTES["resnet_cifar"],
    ),
    "cifar10_resnext65_32x4d": ZooEntry(
        params=674_576,
        notes=_NOTES["resnet_cifar"],
    ),
    "resnet101": ZooEntry(
        params=44_504_896,
        top1=76.532,
        weights_url=f"{V2_RELEASE}/resnet_101-84c3658278.pth",
        notes=_NOTES["resnet_bcos_final"],
    ),
    "resnet152": ZooEntry(
        params=60_125_504,
        top1=76.484,
        weights_url=f"{V2_RELEASE}/resnet_152-42051a77c1.pth",
        notes=_NOTES["resnet_bcos_final"],
    ),
    "resnet152_long": ZooEntry(
        params=60_125_504,
        top1=80.144,
        weights_url=f"{V2_RELEASE}/resnet_152_long-0b4b434939.pth",
        notes=_NOTES["resnet_long"],
    ),
    "resnet18": ZooEntry(
        params=11_693_120,
        top1=68.736,
        weights_url=f"{V2_RELEASE}/resnet_18-68b4160fff.pth",
        notes=_NOTES["resnet_bcos_final"],
    ),
    "resnet34": ZooEntry(
        params=21_797_568,
        top1=72.284,
        weights_url=f"{V2_RELEASE}/resnet_34-a63425a03e.pth",
        notes=_NOTES["resnet_bcos_final"],
    ),
    "resnet50": ZooEntry(
        params=25_538_880,
        top1=75.882,
        weights_url=f"{V2_RELEASE}/resnet_50-ead259efe4.pth",
        notes=_NOTES["resnet_bcos_final"],
    ),
    "resnet50_long": ZooEntry(
        params=25_538_880,
        top1=79.468,
        weights_url=f"{V2_RELEASE}/resnet_50_long-ef38a88533.pth",
        notes=_NOTES["resnet_long"],
    ),
    "resnext101_32x8d": ZooEntry(
        params=88_698_304,
        notes=_NOTES["resnet_bare"],
    ),
    "resnext50_32x4d": ZooEntry(
        params=25_003_200,
        top1=75.82,
        weights_url=f"{V2_RELEASE}/resnext_50_32x4d-57af241ab9.pth",
        notes=_NOTES["resnet_bcos_final"],
    ),
    "standard_resnet101": ZooEntry(
        params=44_549_160,
        top1=77.37,
        notes="torchvision.models.resnet101",
    ),
    "standard_resnet152": ZooEntry(
        params=60_192_808,
        top1=78.31,
        notes="torchvision.models.resnet152",
    ),
    "standard_resnet18": ZooEntry(
        params=11_689_512,
        top1=69.76,
        notes="torchvision.models.resnet18",
    ),
    "standard_resnet34": ZooEntry(
        params=21_797_672,
        top1=73.3,
        notes="torchvision.models.resnet34",
    ),
    "standard_resnet50": ZooEntry(
        params=25_557_032,
        top1=76.15,
        notes="torchvision.models.resnet50",
    ),
    "standard_resnext101_32x8d": ZooEntry(
        params=88_791_336,
        notes="torchvision.models.resnext101_32x8d",
    ),
    "standard_resnext50_32x4d": ZooEntry(
        params=25_028_904,
        notes="torchvision.models.resnext50_32x4d",
    ),
    "standard_wide_resnet101_2": ZooEntry(
        params=126_886_696,
        notes="torchvision.models.wide_resnet101_2",
    ),
    "standard_wide_resnet50_2": ZooEntry(
        params=68_883_240,
        notes="torchvision.models.wide_resnet50_2",
    ),
    "v1_resnet101": ZooEntry(
        params=88_904_448,
        notes=(
            "moboehle/B-cos models/bcos/resnet.py resnet101 wrapped as in v1 get_model; logit "
            "temperature 10 (ResNet-34's config) for every depth"
        ),
    ),
    "v1_resnet152": ZooEntry(
        params=120_099_584,
        notes=(
            "moboehle/B-cos models/bcos/resnet.py resnet152 wrapped as in v1 get_model; logit "
            "temperature 10 (ResNet-34's config) for every depth"
        ),
    ),
    "v1_resnet18": ZooEntry(
        params=23_376_640,
        notes=(
            "moboehle/B-cos models/bcos/resnet.py resnet18 wrapped as in v1 get_model; logit "
            "temperature 10 (ResNet-34's config) for every depth"
        ),
    ),
    "v1_resnet34": ZooEntry(
        params=43_578_112,
        weights_url=f"{V1_RELEASE}/mYe6TggQsDymZbk/download",
        notes=(
            "moboehle/B-cos models/bcos/resnet.py resnet34 wrapped as in v1 get_model; logit "
            "temperature 10 (ResNet-34's config) for every depth"
        ),
    ),
    "v1_resnet50": ZooEntry(
        params=51_024_640,
        notes=(
            "moboehle/B-cos models/bcos/resnet.py resnet50 wrapped as in v1 get_model; logit "
            "temperature 10 (ResNet-34's config) for every depth"
        ),
    ),
    "wide_resnet101_2": ZooEntry(
        params=126_826_176,
        notes=_NOTES["resnet_bare"],
    ),
    "wide_resnet50_2": ZooEntry(
        params=68_857_536,
        notes=_NOTES["resnet_bare"],
    ),
    # densenet
    "cifar10_densenet100": ZooEntry(
        params=757_806,
        notes=_NOTES["densenet_cifar"],
    ),
    "cifar10_densenet190": ZooEntry(
        params=25_498_100,
        notes=_NOTES["densenet_cifar"],
    ),
    "cifar10_densenet250": ZooEntry(
        params=15_196_704,
        notes=_NOTES["densenet_cifar"],
    ),
    "cifar10_densenet52": ZooEntry(
        params=261_318,
        notes=_NOTES["densenet_cifar"],
    ),
    "densenet121": ZooEntry(
        params=7_945_440,
        top1=73.612,
        weights_url=f"{V2_RELEASE}/densenet_121-b8daf96afb.pth",
        notes=_NOTES["densenet_bcos_final"],
    ),
    "densenet121_long": ZooEntry(
        params=7_945_440,
        top1=77.302,
        weights_url=f"{V2_RELEASE}/densenet_121_long-5175461597.pth",
        notes="densenet121 architecture, 600-epoch recipe (bcos_final_long)",
    ),
    "densenet161": ZooEntry(
        params=28_584_144,
        top1=76.622,
        weights_url=f"{V2_RELEASE}/densenet_161-9e9ea51353.pth",
        notes=_NOTES["densenet_bcos_final"],
    ),
    "densenet169": ZooEntry(
        params=14_078_688,
        top1=75.186,
        weights_url=f"{V2_RELEASE}/densenet_169-7037ee0604.pth",
        notes=_NOTES["densenet_bcos_final"],
    ),
    "densenet201": ZooEntry(
        params=19_907_808,
        top1=75.48,
        weights_url=f"{V2_RELEASE}/densenet_201-00ac87066f.pth",
        notes=_NOTES["densenet_bcos_final"],
    ),
    "standard_densenet121": ZooEntry(
        params=7_978_856,
        top1=74.65,
        notes=_NOTES["densenet_torchvision"],
    ),
    "standard_densenet161": ZooEntry(
        params=28_681_000,
        top1=77.65,
        notes=_NOTES["densenet_torchvision"],
    ),
    "standard_densenet169": ZooEntry(
        params=14_149_480,
        top1=76.0,
        notes=_NOTES["densenet_torchvision"],
    ),
    "standard_densenet201": ZooEntry(
        params=20_013_928,
        top1=77.2,
        notes=_NOTES["densenet_torchvision"],
    ),
    "v1_densenet121": ZooEntry(
        params=15_807_232,
        weights_url=f"{V1_RELEASE}/LW2HsNDzAzaaaDH/download",
        notes=_NOTES["densenet_v1"],
    ),
    "v1_densenet161": ZooEntry(
        params=56_948_352,
        notes=_NOTES["densenet_v1"],
    ),
    "v1_densenet169": ZooEntry(
        params=27_998_976,
        notes=_NOTES["densenet_v1"],
    ),
    "v1_densenet201": ZooEntry(
        params=39_586_560,
        notes=_NOTES["densenet_v1"],
    ),
    # vgg
    "standard_vgg11": ZooEntry(
        params=132_863_336,
        top1=69.02,
        notes=_NOTES["vgg_torchvision"],
    ),
    "standard_vgg11_bn": ZooEntry(
        params=132_868_840,
        notes=_NOTES["vgg_torchvision_bn"],
    ),
    "standard_vgg13": ZooEntry(
        params=133_047_848,
        notes=_NOTES["vgg_torchvision"],
    ),
    "standard_vgg13_bn": ZooEntry(
        params=133_053_736,
        notes=_NOTES["vgg_torchvision_bn"],
    ),
    "standard_vgg16": ZooEntry(
        params=138_357_544,
        notes=_NOTES["vgg_torchvision"],
    ),
    "standard_vgg16_bn": ZooEntry(
        params=138_365_992,
        notes=_NOTES["vgg_torchvision_bn"],
    ),
    "standard_vgg19": ZooEntry(
        params=143_667_240,
        notes=_NOTES["vgg_torchvision"],
    ),
    "standard_vgg19_bn": ZooEntry(
        params=143_678_248,
        notes=_NOTES["vgg_torchvision_bn"],
    ),
    "v1_vgg11": ZooEntry(
        params=265_706_240,
        weights_url=f"{V1_RELEASE}/kEHgFSSKMEdeA5N/download",
        notes=_NOTES["vgg_v1"],
    ),
    "v1_vgg13": ZooEntry(
        params=266_074_880,
        notes=_NOTES["vgg_v1"],
    ),
    "v1_vgg16": ZooEntry(
        params=276_691_712,
        notes=_NOTES["vgg_v1"],
    ),
    "v1_vgg19": ZooEntry(
        params=287_308_544,
        notes=_NOTES["vgg_v1"],
    ),
    "vgg11": ZooEntry(
        params=132_853_120,
        notes=_NOTES["vgg"],
    ),
    "vgg11_bnu": ZooEntry(
        params=132_855_872,
        top1=69.31,
        weights_url=f"{V2_RELEASE}/vgg_11_bnu-34036029f0.pth",
        notes=_NOTES["vgg_bnu"],
    ),
    "vgg13": ZooEntry(
        params=133_037_440,
        notes=_NOTES["vgg"],
    ),
    "vgg13_bnu": ZooEntry(
        params=133_040_384,
        notes=_NOTES["vgg_bnu"],
    ),
    "vgg16": ZooEntry(
        params=138_345_856,
        notes=_NOTES["vgg"],
    ),
    "vgg16_bnu": ZooEntry(
        params=138_350_080,
        notes=_NOTES["vgg_bnu"],
    ),
    "vgg19": ZooEntry(
        params=143_654_272,
        notes=_NOTES["vgg"],
    ),
    "vgg19_bnu": ZooEntry(
        params=143_659_776,
        notes=_NOTES["vgg_bnu"],
    ),
    # convnext
    "convnext_atto": ZooEntry(
        params=3_682_320,
        notes=(
            "bcos.models.convnext.convnext_atto (no released weights); "
            "NoBias(DetachablePositionNorm2d), eps 1e-6"
        ),
    ),
    "convnext_base": ZooEntry(
        params=88_466_304,
        top1=79.65,
        weights_url=f"{V2_RELEASE}/convnext_base_pn-b0495852c6.pth",
        notes="bcos.models.pretrained.convnext_base; NoBias(DetachablePositionNorm2d), eps 1e-6",
    ),
    "convnext_base_bnu": ZooEntry(
        params=88_466_304,
        top1=80.142,
        weights_url=f"{V2_RELEASE}/convnext_base_bnu-7c32a704b3.pth",
        notes="bcos.models.pretrained.convnext_base_bnu; NoBias(BatchNormUncentered2d)",
    ),
    "convnext_large": ZooEntry(
        params=197_580_096,
        notes=(
            "bcos.models.convnext.convnext_large (no released weights); "
            "NoBias(DetachablePositionNorm2d), eps 1e-6"
        ),
    ),
    "convnext_small": ZooEntry(
        params=50_129_568,
        notes=(
            "bcos.models.convnext.convnext_small (no released weights); "
            "NoBias(DetachablePositionNorm2d), eps 1e-6"
        ),
    ),
    "convnext_tiny": ZooEntry(
        params=28_543_392,
        top1=77.488,
        weights_url=f"{V2_RELEASE}/convnext_tiny_pn-539b1bfb37.pth",
        notes="bcos.models.pretrained.convnext_tiny; NoBias(DetachablePositionNorm2d), eps 1e-6",
    ),
    "convnext_tiny_bnu": ZooEntry(
        params=28_543_392,
        top1=76.826,
        weights_url=f"{V2_RELEASE}/convnext_tiny_bnu-dbd7f5ef9d.pth",
        notes="bcos.models.pretrained.convnext_tiny_bnu; NoBias(BatchNormUncentered2d)",
    ),
    "standard_convnext_atto": ZooEntry(
        params=3_695_520,
        notes=(
            "torchvision.models.convnext.ConvNeXt with the atto block setting (torchvision has no "
            "atto entry point)"
        ),
    ),
    "standard_convnext_base": ZooEntry(
        params=88_591_464,
        top1=84.062,
        weights_url=f"{TORCHVISION}/convnext_base-6075fbad.pth",
        notes="torchvision.models.convnext_base",
    ),
    "standard_convnext_large": ZooEntry(
        params=197_767_336,
        top1=84.414,
        weights_url=f"{TORCHVISION}/convnext_large-ea097f82.pth",
        notes="torchvision.models.convnext_large",
    ),
    "standard_convnext_small": ZooEntry(
        params=50_223_688,
        top1=83.616,
        weights_url=f"{TORCHVISION}/convnext_small-0c510722.pth",
        notes="torchvision.models.convnext_small",
    ),
    "standard_convnext_tiny": ZooEntry(
        params=28_589_128,
        top1=82.52,
        weights_url=f"{TORCHVISION}/convnext_tiny-983f1562.pth",
        notes="torchvision.models.convnext_tiny",
    ),
    # vit
    "simple_vit_b_patch16_224": ZooEntry(
        params=86_901_504,
        top1=74.408,
        weights_url=f"{V2_RELEASE}/bcos_simple_vit_b_patch16_224-1fc4750806.pth",
        notes="bcos.models.pretrained.simple_vit_b_patch16_224",
    ),
    "simple_vit_l_patch16_224": ZooEntry(
        params=178_787_328,
        top1=75.06,
        weights_url=f"{V2_RELEASE}/bcos_simple_vit_l_patch16_224-9613b2ad0a.pth",
        notes="bcos.models.pretrained.simple_vit_l_patch16_224",
    ),
    "simple_vit_s_patch16_224": ZooEntry(
        params=22_217_088,
        top1=69.246,
        weights_url=f"{V2_RELEASE}/bcos_simple_vit_s_patch16_224-75e99d1f73.pth",
        notes=(
            "bcos.models.pretrained.simple_vit_s_patch16_224; the model zoo quotes 22.28M "
            "parameters, the reference module has 22.217M"
        ),
    ),
    "simple_vit_ti_patch16_224": ZooEntry(
        params=5_800_128,
        top1=59.96,
        weights_url=f"{V2_RELEASE}/bcos_simple_vit_ti_patch16_224-4b0824b1c1.pth",
        notes="bcos.models.pretrained.simple_vit_ti_patch16_224",
    ),
    "standard_simple_vit_b_patch16_224": ZooEntry(
        params=86_378_728,
        top1=75.3,
        weights_url=f"{V2_RELEASE}/standard_simple_vit_b_patch16_224-87074200ed.pth",
        notes="bcos.models.pretrained.standard_simple_vit_b_patch16_224",
    ),
    "standard_simple_vit_l_patch16_224": ZooEntry(
        params=178_104_296,
        top1=75.71,
        weights_url=f"{V2_RELEASE}/standard_simple_vit_l_patch16_224-62dc536e03.pth",
        notes="bcos.models.pretrained.standard_simple_vit_l_patch16_224",
    ),
    "standard_simple_vit_s_patch16_224": ZooEntry(
        params=21_956_200,
        top1=74.47,
        weights_url=f"{V2_RELEASE}/standard_simple_vit_s_patch16_224-f2934fcdcf.pth",
        notes="bcos.models.pretrained.standard_simple_vit_s_patch16_224",
    ),
    "standard_simple_vit_ti_patch16_224": ZooEntry(
        params=5_670_184,
        top1=70.23,
        weights_url=f"{V2_RELEASE}/standard_simple_vit_ti_patch16_224-2ae8c65a39.pth",
        notes="bcos.models.pretrained.standard_simple_vit_ti_patch16_224",
    ),
    "standard_vitc_b_patch1_14": ZooEntry(
        params=81_388_648,
        top1=76.79,
        weights_url=f"{V2_RELEASE}/standard_vitc_b_patch1_14-4d374b0220.pth",
        notes=(
            "bcos.models.pretrained.standard_vitc_b_patch1_14; 224x224 input -> 14x14 tokens of "
            "patch size 1 after the conv stem"
        ),
    ),
    "standard_vitc_l_patch1_14": ZooEntry(
        params=167_541_352,
        top1=77.866,
        weights_url=f"{V2_RELEASE}/standard_vitc_l_patch1_14-560e48f246.pth",
        notes=(
            "bcos.models.pretrained.standard_vitc_l_patch1_14; 224x224 input -> 14x14 tokens of "
            "patch size 1 after the conv stem"
        ),
    ),
    "standard_vitc_s_patch1_14": ZooEntry(
        params=20_910_184,
        top1=75.756,
        weights_url=f"{V2_RELEASE}/standard_vitc_s_patch1_14-34ecd7288e.pth",
        notes=(
            "bcos.models.pretrained.standard_vitc_s_patch1_14; 224x224 input -> 14x14 tokens of "
            "patch size 1 after the conv stem"
        ),
    ),
    "standard_vitc_ti_patch1_14": ZooEntry(
        params=5_334_952,
        top1=72.59,
        weights_url=f"{V2_RELEASE}/standard_vitc_ti_patch1_14-a5d6bded37.pth",
        notes=(
            "bcos.models.pretrained.standard_vitc_ti_patch1_14; 224x224 input -> 14x14 tokens of "
            "patch size 1 after the conv stem"
        ),
    ),
    "vitc_b_patch1_14": ZooEntry(
        params=81_326_016,
        top1=77.152,
        weights_url=f"{V2_RELEASE}/bcos_vitc_b_patch1_14-a13c46397b.pth",
        notes=(
            "bcos.models.pretrained.vitc_b_patch1_14; the model zoo quotes 81.37M parameters, the "
            "reference module has 81.326M; 224x224 input -> 14x14 tokens of patch size 1 after "
            "the conv stem"
        ),
    ),
    "vitc_l_patch1_14": ZooEntry(
        params=167_444_160,
        top1=77.782,
        weights_url=f"{V2_RELEASE}/bcos_vitc_l_patch1_14-8739e18b8d.pth",
        notes=(
            "bcos.models.pretrained.vitc_l_patch1_14; 224x224 input -> 14x14 tokens of patch size "
            "1 after the conv stem"
        ),
    ),
    "vitc_s_patch1_14": ZooEntry(
        params=20_878_704,
        top1=74.504,
        weights_url=f"{V2_RELEASE}/bcos_vitc_s_patch1_14-cf55c88f0c.pth",
        notes=(
            "bcos.models.pretrained.vitc_s_patch1_14; 224x224 input -> 14x14 tokens of patch size "
            "1 after the conv stem"
        ),
    ),
    "vitc_ti_patch1_14": ZooEntry(
        params=5_318_712,
        top1=67.26,
        weights_url=f"{V2_RELEASE}/bcos_vitc_ti_patch1_14-ddd6193a77.pth",
        notes=(
            "bcos.models.pretrained.vitc_ti_patch1_14; 224x224 input -> 14x14 tokens of patch "
            "size 1 after the conv stem"
        ),
    ),
    # inception
    "standard_inception_v3": ZooEntry(
        params=27_161_264,
        top1=77.294,
        weights_url=f"{TORCHVISION}/inception_v3_google-0cc3c7bd.pth",
        notes="torchvision Inception v3 (transform_input=True, aux head in training)",
    ),
    "v1_inception_v3": ZooEntry(
        params=54_247_808,
        weights_url=f"{V1_RELEASE}/QSEo6QSNgPZqNfi/download",
        notes=(
            "v1 (CVPR 2022) B-cos Inception v3, B=2, MaxOut 2, scale_fact 200; aux head in training"
        ),
    ),
    # cifar9l
    "v1_cifar10_9l": ZooEntry(
        params=3_772_160,
        top1=93.19,
        weights_url=f"{V1_RELEASE}/mksX2CJMCDQbMYb/download",
        notes="v1 CIFAR-10 9L-M2 B-cos CNN; B=2 unless b= is given (weights/top1: B=2)",
    ),
    "v1_cifar10_9l_b100": ZooEntry(
        params=3_772_160,
        top1=93.53,
        weights_url=f"{V1_RELEASE}/q8cRRojXZ2WNWbS/download",
        notes="v1 CIFAR-10 config 9L-M2-B1",
    ),
    "v1_cifar10_9l_b125": ZooEntry(
        params=3_772_160,
        top1=93.81,
        weights_url=f"{V1_RELEASE}/oX6H7jQiSN2dfWJ/download",
        notes="v1 CIFAR-10 config 9L-M2-B1.25",
    ),
    "v1_cifar10_9l_b150": ZooEntry(
        params=3_772_160,
        top1=93.69,
        weights_url=f"{V1_RELEASE}/3LxnBCarS8Lpq5b/download",
        notes="v1 CIFAR-10 config 9L-M2-B1.5",
    ),
    "v1_cifar10_9l_b175": ZooEntry(
        params=3_772_160,
        top1=93.69,
        weights_url=f"{V1_RELEASE}/XLwEnaKr9bYQJaN/download",
        notes="v1 CIFAR-10 config 9L-M2-B1.75",
    ),
    "v1_cifar10_9l_b200": ZooEntry(
        params=3_772_160,
        top1=93.19,
        weights_url=f"{V1_RELEASE}/mksX2CJMCDQbMYb/download",
        notes="v1 CIFAR-10 config 9L-M2-B2",
    ),
    "v1_cifar10_9l_b225": ZooEntry(
        params=3_772_160,
        top1=92.6,
        weights_url=f"{V1_RELEASE}/qFsqLPdHLQyNHwH/download",
        notes="v1 CIFAR-10 config 9L-M2-B2.25",
    ),
    "v1_cifar10_9l_b250": ZooEntry(
        params=3_772_160,
        top1=92.37,
        weights_url=f"{V1_RELEASE}/XwEAFrPSEYJ2C79/download",
        notes="v1 CIFAR-10 config 9L-M2-B2.5",
    ),
    # small
    "bcos_small_cnn": ZooEntry(
        params=24_656,
        notes="Quickstart / CI model: 3 stages of 3x3 B-cos convs + BNU, 24.7k params.",
    ),
    # B-cosified models (models/bcosified.py)
    "bcosified_densenet121": ZooEntry(
        params=7_945_440,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_densenet121: released experiment bcosification/densenet_121 "
            "(from torchvision DenseNet121_Weights.DEFAULT); renamed (positional) features "
            "children; B=2 raw filters, BNU no bias, ReLU, AvgPool stem"
        ),
    ),
    "bcosified_densenet161": ZooEntry(
        params=28_584_144,
        notes=(
            "B-cosified standard_densenet161: no released checkpoint; renamed (positional) "
            "features children; B=2 raw filters, BNU no bias, ReLU, AvgPool stem"
        ),
    ),
    "bcosified_densenet169": ZooEntry(
        params=14_078_688,
        notes=(
            "B-cosified standard_densenet169: no released checkpoint; renamed (positional) "
            "features children; B=2 raw filters, BNU no bias, ReLU, AvgPool stem"
        ),
    ),
    "bcosified_densenet201": ZooEntry(
        params=19_907_808,
        notes=(
            "B-cosified standard_densenet201: no released checkpoint; renamed (positional) "
            "features children; B=2 raw filters, BNU no bias, ReLU, AvgPool stem"
        ),
    ),
    "bcosified_resnet101": ZooEntry(
        params=44_504_896,
        notes=(
            "B-cosified standard_resnet101: no released checkpoint; B=2 raw filters, BNU no bias, "
            "ReLU, AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_resnet152": ZooEntry(
        params=60_125_504,
        notes=(
            "B-cosified standard_resnet152: no released checkpoint; B=2 raw filters, BNU no bias, "
            "ReLU, AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_resnet18": ZooEntry(
        params=11_693_120,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_resnet18: released experiment bcosification/resnet_18 (from "
            "torchvision ResNet18_Weights.DEFAULT); B=2 raw filters, BNU no bias, ReLU, AvgPool "
            "stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_resnet34": ZooEntry(
        params=21_797_568,
        notes=(
            "B-cosified standard_resnet34: no released checkpoint; B=2 raw filters, BNU no bias, "
            "ReLU, AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_resnet50": ZooEntry(
        params=25_538_880,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_resnet50: released experiment bcosification/resnet_50 (from "
            "torchvision ResNet50_Weights.DEFAULT (V2)); B=2 raw filters, BNU no bias, ReLU, "
            "AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_resnet50_v1": ZooEntry(
        params=25_538_880,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_resnet50 from torchvision IMAGENET1K_V1 weights: released "
            "experiment bcosification/resnet_50_V1; architecture of bcosified_resnet50"
        ),
    ),
    "bcosified_resnext101_32x8d": ZooEntry(
        params=88_698_304,
        notes=(
            "B-cosified standard_resnext101_32x8d: no released checkpoint; B=2 raw filters, BNU "
            "no bias, ReLU, AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_resnext50_32x4d": ZooEntry(
        params=25_003_200,
        notes=(
            "B-cosified standard_resnext50_32x4d: no released checkpoint; B=2 raw filters, BNU no "
            "bias, ReLU, AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_simple_vit_b_patch16_224": ZooEntry(
        params=86_901_504,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_simple_vit_b_patch16_224: released experiment "
            "vit_bcosification/bcosifyv2_simple_vit_b_patch16_224_0.001_lrWarmup_gapReorder (from "
            "standard_simple_vit_b_patch16_224 (B-cos-v2 hub)); to_qkv plain; detachable GELU and "
            "LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_simple_vit_l_patch16_224": ZooEntry(
        params=178_787_328,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_simple_vit_l_patch16_224: released experiment "
            "vit_bcosification/bcosifyv2_simple_vit_l_patch16_224_0.001_lrWarmup_gapReorder (from "
            "standard_simple_vit_l_patch16_224 (B-cos-v2 hub)); to_qkv plain; detachable GELU and "
            "LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_simple_vit_s_patch16_224": ZooEntry(
        params=22_217_088,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_simple_vit_s_patch16_224: released experiment "
            "vit_bcosification/bcosifyv2_simple_vit_s_patch16_224_0.001_lrWarmup_gapReorder (from "
            "standard_simple_vit_s_patch16_224 (B-cos-v2 hub)); to_qkv plain; detachable GELU and "
            "LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_simple_vit_ti_patch16_224": ZooEntry(
        params=5_800_128,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_simple_vit_ti_patch16_224: released experiment "
            "vit_bcosification/bcosifyv2_simple_vit_ti_patch16_224_0.001_lrWarmup_gapReorder "
            "(from standard_simple_vit_ti_patch16_224 (B-cos-v2 hub)); to_qkv plain; detachable "
            "GELU and LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_small_cnn": ZooEntry(
        params=24_656,
        notes="B-cosified standard_small_cnn (examples/bcosify_quickstart.py)",
    ),
    "bcosified_vitc_b_patch1_14": ZooEntry(
        params=81_326_016,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_vitc_b_patch1_14: released experiment "
            "vit_bcosification/bcosifyv2_vitc_b_patch1_14_0.001_lrWarmup_gapReorder (from "
            "standard_vitc_b_patch1_14 (B-cos-v2 hub)); to_qkv plain; detachable GELU and "
            "LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_vitc_l_patch1_14": ZooEntry(
        params=167_444_160,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_vitc_l_patch1_14: released experiment "
            "vit_bcosification/bcosifyv2_vitc_l_patch1_14_0.001_lrWarmup_gapReorder (from "
            "standard_vitc_l_patch1_14 (B-cos-v2 hub)); to_qkv plain; detachable GELU and "
            "LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_vitc_s_patch1_14": ZooEntry(
        params=20_878_704,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_vitc_s_patch1_14: released experiment "
            "vit_bcosification/bcosifyv2_vitc_s_patch1_14_0.001_lrWarmup_gapReorder (from "
            "standard_vitc_s_patch1_14 (B-cos-v2 hub)); to_qkv plain; detachable GELU and "
            "LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_vitc_ti_patch1_14": ZooEntry(
        params=5_318_712,
        weights_url=BCOSIFICATION_RELEASE,
        notes=(
            "B-cosified standard_vitc_ti_patch1_14: released experiment "
            "vit_bcosification/bcosifyv2_vitc_ti_patch1_14_0.001_lrWarmup_gapReorder (from "
            "standard_vitc_ti_patch1_14 (B-cos-v2 hub)); to_qkv plain; detachable GELU and "
            "LayerNorm (no bias); head before the token mean; log(1/999)"
        ),
    ),
    "bcosified_wide_resnet101_2": ZooEntry(
        params=126_826_176,
        notes=(
            "B-cosified standard_wide_resnet101_2: no released checkpoint; B=2 raw filters, BNU "
            "no bias, ReLU, AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "bcosified_wide_resnet50_2": ZooEntry(
        params=68_857_536,
        notes=(
            "B-cosified standard_wide_resnet50_2: no released checkpoint; B=2 raw filters, BNU no "
            "bias, ReLU, AvgPool stem, 1x1 head, -log(999)"
        ),
    ),
    "standard_small_cnn": ZooEntry(
        params=24_346,
        notes=(
            "standard twin of bcos_small_cnn (conv, BatchNorm, ReLU, Dense head); quickstart "
            "B-cosification"
        ),
    ),
})
