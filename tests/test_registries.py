"""The two registries: models (family ARCHITECTURES + zoo metadata) and attribution methods."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcos_jax import attribution as A
from bcos_jax import models
from bcos_jax.attribution import registry as method_registry
from bcos_jax.evaluation import DEFAULT_METHODS as EVALUATION_DEFAULTS
from bcos_jax.models import registry, zoo


# ------------------------------------------------------------------------------- models
def test_every_family_declares_its_models_once_and_the_zoo_names_only_declared_ones():
    declared = [a for family in models.FAMILIES for a in family.ARCHITECTURES]
    names = [a.name for a in declared]
    assert len(names) == len(set(names))
    assert sorted(names) == models.list_models()
    assert set(zoo.ZOO) <= set(names)
    for family in models.FAMILIES:
        assert {a.family for a in family.ARCHITECTURES}, family.__name__
    for a in declared:
        spec = models.get_spec(a.name)
        assert spec.build is a.build and spec.family == a.family and spec.version == a.version
        entry = zoo.ZOO[a.name]
        assert (spec.params, spec.top1, spec.weights_url, spec.notes) == (
            entry.params, entry.top1, entry.weights_url, entry.notes)


def _arch(name, **kw):
    return registry.Architecture(name, models.get_spec("bcos_small_cnn").build, family="small",
                                 version=kw.pop("version", "v2"), **kw)


def test_join_refuses_duplicates_and_zoo_entries_without_an_architecture():
    with pytest.raises(ValueError, match="'a' declared twice"):
        registry.join([_arch("a"), _arch("a")], {})
    with pytest.raises(ValueError, match=r"entries for models no family declares: \['b'\]"):
        registry.join([_arch("a")], {"a": zoo.ZooEntry(params=1), "b": zoo.ZooEntry(params=2)})
    with pytest.raises(ValueError, match="version must be one of"):
        _arch("a", version="v3")
    with pytest.raises(TypeError, match="Architecture"):
        registry.join([models.get_spec("bcos_small_cnn")], {})


def test_join_puts_the_zoo_entry_beside_the_architecture():
    specs = registry.join([_arch("a", input_size=32, resize=36), _arch("b")],
                          {"a": zoo.ZooEntry(params=7, top1=1.5, weights_url="u", notes="n")})
    assert specs["a"].input_size == 32 and specs["a"].resize == 36
    assert (specs["a"].params, specs["a"].top1, specs["a"].weights_url, specs["a"].notes) == (
        7, 1.5, "u", "n")
    assert specs["b"].params is None and specs["b"].weights_url is None and specs["b"].notes == ""


# ---------------------------------------------------------------------------- methods
def test_method_names_reference_names_and_defaults_come_from_the_one_list():
    reg = method_registry.REGISTERED
    assert list(A.METHODS) == [m.name for m in reg]
    assert A.REFERENCE_NAMES == {m.reference_name: m.name for m in reg if m.reference_name}
    assert A.DEFAULT_METHODS == EVALUATION_DEFAULTS == tuple(m.name for m in reg if m.default)
    assert A.get_method("Ours") is A.METHODS["bcos"] and A.get_method("GCam").name == "gradcam"
    with pytest.raises(ValueError, match="unknown attribution method 'gradcm'"):
        A.get_method("gradcm")
    assert [m.name for m in reg if not m.jittable] == ["lime"]
    with pytest.raises(ValueError, match="needs must be one of"):
        A.Method("x", A.gradient, "X", needs="gpu")
    with pytest.raises(TypeError):
        A.METHODS["bcos"].settings["x"] = 1  # read-only


def test_a_new_method_needs_only_its_method_object():
    """A Method carries what make_attributor needs: no name-based special cases."""
    calls = []

    def host_compile(fns, scale):
        def run(x, targets=None):
            calls.append(np.asarray(x).shape)  # host-side work, outside jit
            return A.gradient(fns, x, targets) * scale

        return run

    def lin(x):
        return jnp.einsum("nhwc,kc->nk", x, jnp.arange(12.0).reshape(4, 3)) / 10

    x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3))
    m = A.Method("scaled_gradient", A.gradient, "SG", settings={"scale": 2.0},
                 compile=host_compile)
    run = A.make_attributor(m, lin)
    np.testing.assert_allclose(run(x, jnp.array([1, 2])), 2 * A.gradient(lin, x, jnp.array([1, 2])))
    assert calls == [(2, 4, 4, 3)]
    with pytest.raises(ValueError, match="needs a B-cos model"):
        A.METHODS["bcos"].check(A.ModelFns(logits=lin))
    with pytest.raises(ValueError, match="needs a feature tap"):
        A.METHODS["gradcam"].check(A.ModelFns(logits=lin))
