"""One training step of the v2 ImageNet recipe configs through the real input pipeline on
``tfds.testing.mock_data`` with a tiny model (see ``training_helpers.one_step_on_mock_data``);
the v1, CIFAR and standard-ViT recipes are in test_training_recipes_more.py."""
import pytest
from training_helpers import one_step_on_mock_data

pytest.importorskip("tensorflow_datasets")

RECIPES = [
    ("imagenet_bcos_final", "resnet50"),
    # EMA, mixup/cutmix, repeated augmentation, accumulation 2:
    ("imagenet_bcos_final_long", "convnext_base_bnu"),
    ("imagenet_vit_final", "vitc_s_patch1_14"),  # per-step schedule, RandAugment, mixup
]


@pytest.mark.parametrize("name,arg", RECIPES, ids=[f"{n}:{a}" for n, a in RECIPES])
def test_one_step_on_mock_data(name, arg, tmp_path):
    one_step_on_mock_data(name, arg, str(tmp_path))
