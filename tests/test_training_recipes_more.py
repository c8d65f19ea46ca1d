"""One training step of the v1, CIFAR-10 and standard-ViT recipe configs through the real
input pipeline on ``tfds.testing.mock_data`` with a tiny model."""
import pytest
from training_helpers import one_step_on_mock_data

pytest.importorskip("tensorflow_datasets")

RECIPES = [
    ("imagenet_vit_final", "standard_simple_vit_s_patch16_224"),  # CE, AdamW, clipping, 3 channels
    ("imagenet_v1", "vgg11"),  # v1 augmentation, step schedule, accumulation 2
    ("cifar10_v1_9l", "2"),  # v1 CIFAR schedule with the epoch-0 lr
    ("cifar10_v2", "resnet20"),
]


@pytest.mark.parametrize("name,arg", RECIPES, ids=[f"{n}:{a}" for n, a in RECIPES])
def test_one_step_on_mock_data(name, arg, tmp_path):
    one_step_on_mock_data(name, arg, str(tmp_path))
