"""The registry knows no engine by name: what it says about an engine comes from the engine's own
declaration (a SPEC in swapstream.engines.backends, or one given to register_engine). No torch,
no checkpoints: fast."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import textwrap

import pytest

from swapstream.core.errors import ConfigError
from swapstream.engines import backends, registry
from swapstream.engines.backends import EngineSpec, has_module
from swapstream.engines.device import PRECISIONS


@pytest.fixture
def engines(monkeypatch) -> dict[str, EngineSpec]:
    """The registry's ENGINES, put back as they were after the test."""
    monkeypatch.setattr(registry, "ENGINES", dict(registry.ENGINES))
    return registry.ENGINES


def test_every_backend_declares_devices_precisions_a_probe_and_its_classes():
    specs = registry.discover()
    assert [s.name for s in specs] == sorted(s.name for s in specs)
    assert {s.name for s in specs} <= set(registry.ENGINES)
    for spec in specs:
        module = sys.modules[f"{backends.__name__}.{spec.name}"]  # one module per engine, named after it
        assert module.SPEC is spec
        assert spec.summary and spec.devices and set(spec.devices) <= {"cpu", "cuda"}, spec
        assert set(spec.precisions) == set(spec.devices), spec
        for runs in spec.precisions.values():
            assert runs and set(runs) <= set(PRECISIONS), spec
        assert callable(spec.probe) and inspect.signature(spec.probe).parameters, spec
        assert set(spec.rank) <= set(spec.devices) and set(spec.targets) <= set(spec.devices), spec
        assert spec.extra or not spec.modules, spec
        for kind in spec.devices:  # the class's module is there (found, not imported)
            module_name, cls = spec.target_for(kind).split(":")
            assert cls.isidentifier() and has_module(module_name), spec
    assert sum(s.reference for s in specs) == 1


def test_the_registry_names_no_engine():
    """No string in registry.py is the name of an engine (no `if name == "onnx"`)."""
    tree = ast.parse(inspect.getsource(registry))
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & {s.name for s in registry.discover()}


def test_the_classes_run_what_their_spec_declares():
    """The spec is the one source of an engine's precisions; the classes read it (importing them
    needs torch: done here on purpose)."""
    for name, spec in registry.ENGINES.items():
        if all(has_module(m) for m in spec.modules):
            for kind in spec.devices:
                cls = registry.engine_class(name, kind)
                assert cls.precisions is spec.precisions and cls.name == spec.name, (name, kind)


class _Plain:
    """What a declared class gets from create_engine."""

    def __init__(self, checkpoint, device="auto", precision="auto", **options) -> None:
        self.checkpoint, self.device, self.precision, self.options = checkpoint, device, precision, options


BACKEND = '''
"""warp: a test engine, declared in a package of its own."""

from swapstream.engines.backends import EngineSpec

REASON = None  # what the probe says; the test changes it


class Warp:
    def __init__(self, checkpoint, device="auto", precision="auto", **options):
        self.checkpoint, self.device, self.precision, self.options = checkpoint, device, precision, options


class WarpCpu(Warp):
    pass


def probe(kind):
    return REASON


SPEC = EngineSpec("warp", __name__ + ":Warp", "warp drive", devices=("cpu",),
                  precisions={"cpu": ("fp32",)}, probe=probe, targets={"cpu": __name__ + ":WarpCpu"},
                  rank={"cpu": -1})
'''


def test_a_new_backend_module_is_found_and_its_declaration_honoured(engines, tmp_path, monkeypatch):
    pkg = tmp_path / "more_backends_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Engines from elsewhere."""\n')
    (pkg / "warp.py").write_text(textwrap.dedent(BACKEND))
    (pkg / "_helpers.py").write_text("X = 1\n")  # not an engine: skipped
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        (spec,) = registry.discover("more_backends_for_test")
        warp = importlib.import_module("more_backends_for_test.warp")
        before = registry.pick_engine("cpu")
        registry.register_engine(spec)

        # it can run: listed, and preferred by auto (rank -1) for what it runs
        assert ("warp", True, "warp drive") in registry.engine_status("cpu")
        assert registry.available_engines("cpu")[-1] == "warp"
        assert registry.auto_order("cpu")[0] == "warp" and "warp" not in registry.auto_order("cuda")
        assert registry.pick_engine("cpu") == "warp"
        assert registry.pick_engine("cpu", "bf16") != "warp"  # it declares fp32 only
        eng = registry.create_engine("auto", "ckpt", device="cpu", batch_size=4)
        assert type(eng) is warp.WarpCpu  # the class declared for the CPU
        assert (eng.checkpoint, eng.device, eng.precision, eng.options) == ("ckpt", "cpu", "fp32",
                                                                          {"batch_size": 4})
        assert registry.engine_class("warp") is warp.Warp
        with pytest.raises(ConfigError, match="does not run bf16 on cpu"):
            registry.create_engine("warp", "ckpt", device="cpu", precision="bf16")
        assert registry.why_unavailable("warp", "cuda") == "runs on cpu only, not cuda"

        # its probe says no: listed with the reason, skipped by auto, refused when asked for
        warp.REASON = "needs a warp core: pip install warp-core"
        assert ("warp", False, warp.REASON) in registry.engine_status("cpu")
        assert "warp" not in registry.available_engines("cpu")
        assert registry.pick_engine("cpu") == before
        with pytest.raises(ConfigError, match="engine 'warp' cannot run here: needs a warp core"):
            registry.resolve_engine("warp", "cpu")
    finally:
        for name in [m for m in sys.modules if m.startswith("more_backends_for_test")]:
            del sys.modules[name]


def test_a_registered_engine_needs_no_module_of_its_own(engines):
    """register_engine: a spec from anywhere; a failing probe is a reason, not a crash; an engine
    without a rank is never auto's choice; without a reference engine auto says what is wrong."""
    def broken(kind: str) -> str | None:
        raise RuntimeError("driver missing")

    target = f"{__name__}:_Plain"
    registry.register_engine(EngineSpec("plain", target, "plain engine", devices=("cpu",)))
    registry.register_engine(EngineSpec("broken", target, "broken probe", probe=broken, rank={"cpu": -5}))
    rows = {name: (ok, why) for name, ok, why in registry.engine_status("cpu")}
    assert rows["plain"] == (True, "plain engine")
    assert registry.engine_precisions("plain") == {"cpu": ("fp32",)}  # fp32 on each device unless declared
    assert rows["broken"] == (False, "its check failed here (RuntimeError: driver missing)")
    assert "plain" not in registry.auto_order("cpu") and registry.pick_engine("cpu") != "broken"
    assert isinstance(registry.create_engine("plain", "ckpt", device="cpu"), _Plain)
    for name in [n for n, s in engines.items() if n != "plain"]:
        del engines[name]
    with pytest.raises(ConfigError, match="no engine runs fp32 on cpu here"):
        registry.pick_engine("cpu")
    with pytest.raises(ConfigError, match="unknown engine 'eager'; engines: auto, plain"):
        registry.create_engine("eager", "ckpt", device="cpu")
