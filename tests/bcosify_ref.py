"""The B-cosification reference, transcribed for the parity tests (PyTorch).

Source: https://github.com/shrebox/B-cosification at commit
de03a039c1468507d9ea6411edf0f06efcca5dc6, licensed under the Apache License 2.0
(Copyright the B-cosification authors; http://www.apache.org/licenses/LICENSE-2.0).
Transcribed from these files (the reference is not on PyPI and tests run offline):

* ``bcos/modules/bcosifyconv2d.py``, ``bcos/modules/bcosifylinear.py`` and the parts of
  ``bcos/modules/bcosconv2d.py`` / ``bcoslinear.py`` they inherit (forward, patch norm with
  ``divisor_override=1``), for B fixed (``learn_b``/``clamping`` off, as the released models);
* ``bcos/modules/norms/uncentered_norms/batchnorm_uncentered.py`` (``from_standard_module``);
* the ``from_standard_module`` of ``DetachableLayerNorm`` / ``DetachableGroupNorm2d``
  (``bcos/modules/norms/centered_norms.py``; the norms themselves are the installed
  ``bcos`` package's, identical in both repositories);
* ``bcosify.py`` and ``bcosify_vit.py`` (``BcosifyNetwork.add_channels`` / ``bcosify``,
  ``MyGELU``), the CLIP branches left out;
* ``bcos/models/standard_models.py`` (``ResNetBcos``, ``DenseNetBcos``), the ``gap_reorder``
  forward of ``bcos/models/vit.py``, and ``get_model`` of
  ``bcos/experiments/ImageNet/{bcosification,vit_bcosification}/model.py`` (stem-pool
  replacement, removal of every bias).

Changes: pretrained weights are not downloaded (the callers pass a standard model with
random weights); ``model_config`` is reduced to the keys these functions read. The
computations are as in the source.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.linalg as LA
import torch.nn.functional as F
import torchvision.transforms as transforms
from bcos.common import BcosUtilMixin
from bcos.modules import LogitLayer, norms
from bcos.modules.common import BcosSequential, DetachableModule
from torch import nn
from torchvision.models import DenseNet, ResNet

IMAGENET_MEAN_ADDINVERSE = (0.485, 0.456, 0.406, 0.515, 0.544, 0.594)
IMAGENET_STD_ADDINVERSE = (0.229, 0.224, 0.225, 0.229, 0.224, 0.225)


# ---------------------------------------------------------------- bcos/modules/bcosify*.py
class BcosifyConv2d(DetachableModule):
    """``BcosifyConv2d``: a plain (not weight-normalised) ``nn.Conv2d`` named ``linear`` with
    the B-cos dynamic scale ``|out| / ||patch||`` (B = 2)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=1,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=False,
        padding_mode="zeros",
        b=2,
        max_out=1,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.groups, self.b, self.max_out = groups, b, max_out
        self.linear = nn.Conv2d(
            in_channels,
            out_channels * max_out,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
        )

    def forward(self, in_tensor):
        out = self.linear(in_tensor)
        if self.max_out > 1:
            out = out.unflatten(dim=1, sizes=(self.out_channels, self.max_out)).max(dim=2).values
        if self.b == 1:
            return out
        norm = self.calc_patch_norms(in_tensor)
        maybe_detached_out = out
        if self.detach:
            maybe_detached_out = out.detach()
            norm = norm.detach()
        if self.b == 2:
            dynamic_scaling = maybe_detached_out.abs() / norm
        else:
            dynamic_scaling = ((maybe_detached_out / norm).abs() + 1e-6).pow(self.b - 1)
        return dynamic_scaling * out

    def calc_patch_norms(self, in_tensor):
        squares = in_tensor**2
        if self.groups == 1:
            squares = squares.sum(1, keepdim=True)
        else:
            squares = squares.unflatten(1, (self.groups, self.in_channels // self.groups)).sum(2)
        norms_ = (
            F.avg_pool2d(
                squares,
                self.kernel_size,
                padding=self.padding,
                stride=self.stride,
                divisor_override=1,
            )
            + 1e-6
        ).sqrt_()
        if self.groups > 1:
            norms_ = torch.repeat_interleave(
                norms_, repeats=self.out_channels // self.groups, dim=1
            )
        return norms_

    @classmethod
    def from_standard_module(cls, mod, model_config):
        new = cls(
            mod.in_channels,
            mod.out_channels,
            mod.kernel_size,
            mod.stride,
            mod.padding,
            mod.dilation,
            mod.groups,
            mod.bias is not None,
            mod.padding_mode,
            b=model_config["bcos_args"].get("b", 1),
        )
        if model_config.get("weights", None) is not None:
            new.linear.weight.data = mod.weight.data
            if mod.bias is not None:
                new.linear.bias = nn.Parameter(mod.bias.data)
        return new

    @classmethod
    def from_standard_module_linear(cls, mod, model_config):
        new = cls(
            mod.in_features,
            mod.out_features,
            1,
            1,
            0,
            1,
            1,
            mod.bias is not None,
            "zeros",
            b=model_config["bcos_args"].get("b", 1),
        )
        if model_config.get("weights", None) is not None:
            new.linear.weight.data = mod.weight.data.view_as(new.linear.weight.data)
            if mod.bias is not None:
                new.linear.bias = nn.Parameter(mod.bias.data)
        return new


class BcosifyLinear(DetachableModule):
    """``BcosifyLinear``: plain ``nn.Linear`` named ``linear``, norm ``||x|| + 1e-12``."""

    def __init__(self, in_features, out_features, bias=False, b=2, max_out=1):
        super().__init__()
        self.in_features, self.out_features, self.b, self.max_out = (
            in_features,
            out_features,
            b,
            max_out,
        )
        self.linear = nn.Linear(in_features, out_features * max_out, bias=bias)

    def forward(self, in_tensor):
        out = self.linear(in_tensor)
        if self.max_out > 1:
            out = out.unflatten(dim=-1, sizes=(self.out_features, self.max_out)).max(dim=-1).values
        if self.b == 1:
            return out
        norm = LA.vector_norm(in_tensor, dim=-1, keepdim=True) + 1e-12
        maybe_detached_out = out
        if self.detach:
            maybe_detached_out = out.detach()
            norm = norm.detach()
        if self.b == 2:
            dynamic_scaling = maybe_detached_out.abs() / norm
        else:
            dynamic_scaling = ((maybe_detached_out / norm).abs() + 1e-6).pow(self.b - 1)
        return dynamic_scaling * out

    @classmethod
    def from_standard_module(cls, mod, model_config):
        new = cls(
            mod.in_features,
            mod.out_features,
            bias=mod.bias is not None,
            b=model_config["bcos_args"].get("b", 1),
        )
        if model_config.get("weights", None) is not None:
            new.linear.weight.data = mod.weight.data
            if mod.bias is not None:
                new.linear.bias = nn.Parameter(mod.bias.data)
        return new


# ---------------------------------------------------------------- uncentred BN ("BnUncV2")
class BatchNormUncentered2d(nn.BatchNorm2d, DetachableModule):
    def __init__(self, *args, **kwargs):
        self.bias = kwargs.pop("bias", None)
        DetachableModule.__init__(self)
        super().__init__(*args, **kwargs)

    def forward(self, input):
        if self.training:
            x = input.detach() if self.detach else input
            var = x.var(dim=(0, 2, 3), unbiased=False)
            self.running_var.copy_(
                (1 - self.momentum) * self.running_var + self.momentum * var.detach()
            )
        else:
            var = self.running_var
        result = input / (var + self.eps).sqrt()[None, ..., None, None]
        if self.weight is not None:
            result = self.weight[None, ..., None, None] * result
        if self.bias is not None:
            result = result + self.bias[None, ..., None, None]
        return result.type(input.dtype)

    @classmethod
    def from_standard_module(cls, mod, model_config):
        new = cls(
            num_features=mod.num_features,
            eps=mod.eps,
            momentum=mod.momentum,
            affine=mod.affine,
            track_running_stats=mod.track_running_stats,
            bias=mod.bias is not None,
        )
        new.weight.data = mod.weight.data
        if (
            mod.bias is not None
            and model_config["bcosify_args"].get("norm_layer", "BnUncV2") == "BnUncV2"
        ):
            std = (mod.running_var.data + mod.eps).sqrt()
            new.bias.data = mod.bias.data - ((mod.running_mean.data / std) * mod.weight.data)
        else:
            new.bias.data = mod.bias.data
        new.running_var.data = mod.running_var.data
        new.running_mean.data = mod.running_mean.data
        return new


def detachable_layer_norm(mod, model_config):
    new = norms.DetachableLayerNorm(
        normalized_shape=mod.normalized_shape,
        eps=mod.eps,
        elementwise_affine=mod.elementwise_affine,
    )
    if model_config.get("weights", None) is not None:
        new.weight.data = mod.weight.data
        if mod.bias is not None:
            new.bias.data = mod.bias.data
    return new


def detachable_group_norm(mod, model_config):
    new = norms.DetachableGroupNorm2d(
        num_groups=mod.num_groups, num_channels=mod.num_channels, eps=mod.eps, affine=mod.affine
    )
    if model_config.get("weights", None) is not None:
        new.weight.data = mod.weight.data
        if mod.bias is not None:
            new.bias.data = mod.bias.data
    return new


class MyGELU(DetachableModule):
    def forward(self, x):
        gate = 0.5 * (1 + torch.erf(x / np.sqrt(2)))
        if self.detach:
            gate = gate.detach()
        return gate * x


# ---------------------------------------------------------------- standard_models.py
class ResNetBcos(ResNet):
    def _forward_impl(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.fc(x)
        x = self.avgpool(x)
        return x.flatten(1)


class DenseNetBcos(DenseNet):
    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        out = self.classifier(out)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return torch.flatten(out, 1)


# ---------------------------------------------------------------- bcosify.py (CNNs)
class BcosifyNetwork(BcosUtilMixin, nn.Module):
    def __init__(self, model, model_config, add_channels=True, logit_layer=False):
        super().__init__()
        self.model = model
        self.model_config = model_config
        self.logit_layer = None
        if logit_layer:
            self.logit_layer = LogitLayer(logit_temperature=None, logit_bias=-math.log(1000 - 1))
        self.bcosifynormalize = transforms.Normalize(
            mean=IMAGENET_MEAN_ADDINVERSE, std=IMAGENET_STD_ADDINVERSE
        )
        if add_channels:
            BcosifyNetwork.add_channels(self.model)
        BcosifyNetwork.bcosify(self.model, self.model_config)

    def forward(self, x):
        if self.logit_layer:
            return self.logit_layer(self.model(self.bcosifynormalize(x)))
        return self.model(self.bcosifynormalize(x))

    @classmethod
    def add_channels(cls, model):
        found = False
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.in_channels == 3:
                if found:
                    warnings.warn("Found multiple layers with 3 input channels.", stacklevel=2)
                found = True
                module.in_channels = 6
                module.weight.data = torch.cat((module.weight.data, -module.weight.data), dim=1) / 2

    @classmethod
    def bcosify(cls, model, model_config):
        for n, module in model.named_children():
            if len(list(module.children())) > 0:
                cls.bcosify(module, model_config)
            norm_layer = model_config["bcosify_args"].get("norm_layer", "BnUncV2")
            gap = model_config["bcosify_args"].get("gap", True)
            last_layer_name = model_config.get("last_layer_name", "NoLastLayerName")
            if isinstance(module, nn.Conv2d):
                setattr(model, n, BcosifyConv2d.from_standard_module(module, model_config))
            elif isinstance(module, nn.Linear) and (n != last_layer_name or not gap):
                setattr(model, n, BcosifyLinear.from_standard_module(module, model_config))
            elif isinstance(module, nn.Linear) and n == last_layer_name and gap:
                setattr(model, n, BcosifyConv2d.from_standard_module_linear(module, model_config))
            elif isinstance(module, nn.Sequential):
                setattr(model, n, BcosSequential(*module._modules.values()))  # renames the children
            elif isinstance(module, nn.BatchNorm2d) and norm_layer in ("BnUnc2d", "BnUncV2"):
                setattr(model, n, BatchNormUncentered2d.from_standard_module(module, model_config))
            if isinstance(module, nn.ReLU) and not model_config["bcosify_args"].get(
                "act_layer", True
            ):
                setattr(model, n, nn.Identity())


def _remove_biases(model):
    for mod in model.modules():
        if hasattr(mod, "bias") and mod.bias is not None:
            mod.bias = None


CNN_CONFIG = dict(
    weights="pretrained",
    bcos_args=dict(b=2, max_out=1),
    bcosify_args=dict(fix_b=True, use_bias=False, norm_layer="BnUncV2", gap=True, act_layer=True),
)


def bcosify_cnn(
    tv_model, last_layer_name, stem_pool_path, b=2, remove_biases=True, replace_pool=True
):
    """``bcosification/model.py:get_model`` on a standard ``ResNetBcos``/``DenseNetBcos``."""
    config = dict(CNN_CONFIG, last_layer_name=last_layer_name, bcos_args=dict(b=b, max_out=1))
    model = BcosifyNetwork(tv_model, config, add_channels=True, logit_layer=True)
    if replace_pool:  # standard_changes: exec(f'model.model.{k} = v')
        exec(f"model.model.{stem_pool_path} = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)")
    if remove_biases:
        _remove_biases(model)
    return model


# ---------------------------------------------------------------- bcosify_vit.py
class BcosifyViTNetwork(BcosUtilMixin, nn.Module):
    """``bcosify_vit.BcosifyNetwork`` (the non-CLIP branches)."""

    def __init__(self, model, model_config, add_channels=True, logit_layer=False):
        super().__init__()
        self.model = model
        self.model_config = model_config
        self.logit_layer = None
        if logit_layer:
            self.logit_layer = LogitLayer(
                logit_temperature=model_config.get("logit_temperature", None),
                logit_bias=model_config.get("logit_bias", -math.log(1000 - 1)),
            )
        self.bcosifynormalize = transforms.Normalize(
            mean=IMAGENET_MEAN_ADDINVERSE, std=IMAGENET_STD_ADDINVERSE
        )
        if add_channels:
            BcosifyViTNetwork.add_channels(self.model)
        BcosifyViTNetwork.bcosify(self.model, self.model_config)

    def forward(self, x):
        if self.logit_layer:
            return self.logit_layer(self.model(self.bcosifynormalize(x)))
        return self.model(self.bcosifynormalize(x))

    @classmethod
    def add_channels(cls, model):
        for name, module in model.named_modules():
            if name == "to_patch_embedding.conv_stem.0":
                module.in_channels = 6
                module.weight.data = torch.cat((module.weight.data, -module.weight.data), dim=1) / 2
                return
            if name == "to_patch_embedding.linear":
                module.in_features *= 2
                w = module.weight.data.view(module.out_features, -1, 3) / 2
                module.weight.data = torch.cat([w, -w], dim=2).view(
                    module.out_features, module.in_features
                )
                return
        warnings.warn("No linear layer was found.", stacklevel=2)

    @classmethod
    def bcosify(cls, model, model_config):
        for n, module in model.named_children():
            if len(list(module.children())) > 0:
                cls.bcosify(module, model_config)
            act_layer = model_config.get("act_layer", True)
            if isinstance(module, nn.Conv2d):
                setattr(model, n, BcosifyConv2d.from_standard_module(module, model_config))
            elif isinstance(module, nn.Linear):
                if n != "to_qkv":
                    setattr(model, n, BcosifyLinear.from_standard_module(module, model_config))
            elif isinstance(module, nn.GELU):
                setattr(model, n, MyGELU() if act_layer else nn.Identity())
            elif isinstance(module, nn.LayerNorm):
                setattr(model, n, detachable_layer_norm(module, model_config))
            elif isinstance(module, nn.GroupNorm):
                setattr(model, n, detachable_group_norm(module, model_config))


def gap_reorder_forward(self, img):
    """``SimpleViT.forward`` of the reference repository with ``gap_reorder=True``."""
    from einops import rearrange

    x = self.to_patch_embedding(img)
    pe = self.positional_embedding(x)
    x = rearrange(x, "b ... d -> b (...) d") + pe
    x = self.transformer(x)
    x = self.to_latent(x)
    x = self.linear_head(x)
    return x.mean(dim=1)


VIT_CONFIG = dict(
    weights="pretrained",
    bcos_args=dict(b=2, max_out=1),
    bcosify_args=dict(fix_b=True, use_bias=False),
    logit_layer=True,
    act_layer=True,
    logit_bias=math.log(1 / (1000 - 1)),
)


def bcosify_vit(standard_vit, b=2):
    """``vit_bcosification/model.py:get_model`` (bcosifyv2_*_gapReorder, GELU kept, no biases)."""
    import types

    config = dict(VIT_CONFIG, bcos_args=dict(b=b, max_out=1))
    model = BcosifyViTNetwork(standard_vit, config, add_channels=True, logit_layer=True)
    _remove_biases(model)
    model.model.forward = types.MethodType(gap_reorder_forward, model.model)
    return model
