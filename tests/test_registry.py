"""The one registry mechanism: lookup order, decorator, paths and errors that list the names."""

import pytest

from selftrain.registry import Registry, RegistryError


def test_lookup_order_and_errors():
    things: Registry = Registry("sampler", {"json": "json:dumps"})
    assert things.resolve("json").__name__ == "dumps"  # a built-in, imported when asked for

    @things.register("json")
    def mine(x):
        return x

    assert things.resolve("json") is mine  # registered wins over the built-in
    assert things.resolve(path="json:loads").__name__ == "loads"  # a path wins over both
    assert things.names() == ["json"]
    with pytest.raises(RegistryError, match="unknown sampler 'nope'; known samplers: json"):
        things.resolve("nope")
    with pytest.raises(RegistryError, match="must look like 'my_pkg.my_module:MySampler'"):
        things.resolve(path="json.dumps")
    with pytest.raises(RegistryError, match="importing no_such_mod failed"):
        things.resolve(path="no_such_mod:X")
    with pytest.raises(RegistryError, match="module json has no nothing"):
        things.resolve(path="json:nothing")
    with pytest.raises(RegistryError, match="already registered"):
        things.register("json")(len)
