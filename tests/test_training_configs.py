"""Every recipe config builds its model (under jax.eval_shape) and takes one training step
through the real input pipeline on ``tfds.testing.mock_data`` with a tiny model override."""
import jax
import jax.numpy as jnp
import pytest

from bcos_jax import models
from training_helpers import get_config, train_module

RECIPES = [
    ("imagenet_bcos_final", a) for a in ("resnet18", "resnet50", "resnext50_32x4d", "densenet121", "vgg11_bnu")
] + [
    ("imagenet_bcos_final_long", a) for a in ("resnet50_long", "densenet121_long", "convnext_tiny",
                                             "convnext_base_bnu")
] + [
    ("imagenet_vit_final", a) for a in ("vitc_s_patch1_14", "simple_vit_b_patch16_224",
                                       "standard_simple_vit_s_patch16_224")
] + [
    ("imagenet_v1", a) for a in ("resnet34", "densenet121", "densenet121_cossched", "vgg11", "inception_v3")
] + [
    ("cifar10_v1_9l", a) for a in ("1", "2", "2.5")
] + [
    ("cifar10_v2", a) for a in ("resnet20", "resnet56/bnu-linear", "resnet20-nomaxout")
] + [("quickstart", ""), ("quickstart", "ci")]


@pytest.mark.parametrize("name,arg", RECIPES, ids=[f"{n}:{a}" for n, a in RECIPES])
def test_config_builds_its_model(name, arg):
    cfg = get_config(name, arg)
    train = train_module()
    overrides = train.model_overrides(cfg, cfg.model.get("num_classes", 1000 if "imagenet" in name else 10))
    model = models.create(cfg.model_name, **overrides)
    spec = models.get_spec(cfg.model_name)
    s = cfg.data.image_size
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                           jnp.zeros((2, s, s, spec.in_channels)), train=True))
    assert jax.tree.leaves(shapes["params"])
    # Guard rails every recipe keeps.
    assert cfg.batch_size % cfg.grad_accum_steps == 0
    assert cfg.loss in ("bce", "uniform_off_labels_bce", "ce")
    assert cfg.data.add_inverse == (spec.in_channels == 6)
