"""Registry and plugin contract: entry points, laziness, duplicates, unknown and broken names."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest
import torch

from flowsci.errors import PluginError
from flowsci.registry import DOMAINS, MODELS, Registry, build_model, create_domain, register_domain


def test_first_party_domain_found_through_entry_point():
    assert "toy2d" in DOMAINS.names()
    assert DOMAINS.source("toy2d") == "flowsci_domains.toy2d:Toy2D"
    assert create_domain("toy2d").name == "toy2d"
    assert "mlp_velocity" in MODELS.names()


def test_every_call_builds_a_new_domain_and_the_registry_keeps_the_class():
    first, second = create_domain("toy2d"), create_domain("toy2d")
    assert first is not second
    assert isinstance(DOMAINS.get("toy2d"), type)


def test_register_domain_takes_a_class_not_an_instance(monkeypatch):
    monkeypatch.setattr(DOMAINS, "_loaded", dict(DOMAINS._loaded))

    class Mine:
        name = "instance_for_test"

    with pytest.raises(PluginError, match="takes a domain class, not an instance of Mine"):
        register_domain(Mine())


def test_listing_imports_no_plugin():
    code = ("import sys; from flowsci.registry import DOMAINS, MODELS;"
            "names = DOMAINS.names() + MODELS.names();"
            "assert 'toy2d' in names;"
            "assert not any(m.startswith('flowsci_domains.toy2d') for m in sys.modules), "
            "'listing imported toy2d';"
            "from flowsci.registry import create_domain; create_domain('toy2d');"
            "assert 'flowsci_domains.toy2d' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_lists_available_and_suggests():
    with pytest.raises(PluginError,
                       match=r"unknown domain 'toy2" r"e'.*did you mean 'toy2d'.*available: .*toy2d"):
        DOMAINS.get("toy2e")


def test_duplicate_registration_is_an_error_listing_names():
    registry = Registry("widget", "flowsci.test_no_such_group")
    registry.register("a", dict)
    with pytest.raises(PluginError,
                       match=r"widget 'a' is already registered \(from builtins:dict\).*Registered: a"):
        registry.register("a", list)
    assert registry.register("a", list, replace=True) is registry.get("a") is list


def test_register_domain_rejects_taken_entry_point_name():
    with pytest.raises(PluginError, match="already registered"):
        register_domain(type("Impostor", (), {}), name="toy2d")


def _fake_entry_points(*eps: metadata.EntryPoint):
    def entry_points(group: str):
        return [ep for ep in eps if ep.group == group]
    return entry_points


def test_broken_entry_point_names_the_plugin(monkeypatch):
    broken = metadata.EntryPoint("broken", "flowsci_no_such_module:Thing", "flowsci.test_group")
    good = metadata.EntryPoint("good", "collections:OrderedDict", "flowsci.test_group")
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(broken, good))
    registry = Registry("domain", "flowsci.test_group")
    assert registry.names() == ["broken", "good"]
    with pytest.raises(PluginError, match=r"'broken' failed to load from entry point "
                       r"'flowsci_no_such_module:Thing'.*ModuleNotFoundError.*Other domains: good"):
        registry.get("broken")
    assert registry.get("good").__name__ == "OrderedDict"


def test_conflicting_entry_points_are_an_error(monkeypatch):
    a = metadata.EntryPoint("twin", "pkg_a:Domain", "flowsci.test_group")
    b = metadata.EntryPoint("twin", "pkg_b:Domain", "flowsci.test_group")
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(a, b))
    with pytest.raises(PluginError, match=r"'twin' is declared twice.*pkg_a:Domain.*pkg_b:Domain"):
        Registry("domain", "flowsci.test_group").names()


def test_code_registered_domain_needs_the_contract(monkeypatch):
    class Incomplete:
        name = "incomplete_for_test"
        Settings = dict

    monkeypatch.setattr(DOMAINS, "_loaded", dict(DOMAINS._loaded))  # keep the global registry clean
    register_domain(Incomplete)
    with pytest.raises(PluginError, match="lacks 'build_data'"):
        create_domain("incomplete_for_test")


def test_build_model_records_spec_and_rejects_non_plain_arguments():
    model = build_model("mlp_velocity", {"dim": 3, "width": 8, "depth": 1})
    assert model.flowsci_spec == {"name": "mlp_velocity", "params": {"dim": 3, "width": 8, "depth": 1}}
    assert model(torch.zeros(4, 3), torch.zeros(4)).shape == (4, 3)
    with pytest.raises(PluginError, match=r"model 'mlp_velocity' arguments.width is a Tensor"):
        build_model("mlp_velocity", {"dim": 3, "width": torch.tensor(8)})


def test_re_running_a_registration_replaces_the_same_definition(monkeypatch):
    monkeypatch.setattr(DOMAINS, "_loaded", dict(DOMAINS._loaded))
    monkeypatch.setattr(DOMAINS, "_origin", dict(DOMAINS._origin))

    def define():
        class Rerun:  # the same module and qualified name each time, like a re-run notebook cell
            name = "rerun_for_test"
        return Rerun

    first, second = define(), define()
    register_domain(first)
    register_domain(second)
    assert DOMAINS.get("rerun_for_test") is second

    class Other:
        name = "rerun_for_test"

    with pytest.raises(PluginError, match="already registered"):
        register_domain(Other)
