"""rasfw._compat: each private API of Hydra, diffusers and torch that rasfw relies on still answers as used."""

from __future__ import annotations

import torch

from rasfw import _compat


def test_hydra_parsers_split_flags_and_expand_group_sweeps():
    parsed = _compat.hydra_args_parser().parse_args(["--help", "ratio.value=0.5"])
    assert parsed.help and list(parsed.overrides) == ["ratio.value=0.5"]
    (sweep,) = _compat.hydra_overrides_parser("rasfw.conf").parse_overrides(["+fill_point=glob(*)"])
    assert sweep.is_sweep_override()
    assert sorted(sweep.sweep_string_iterator()) == ["reuse", "taylor1", "taylor2"]


def test_diffusers_hook_state_classes_are_what_a_stateful_hook_needs():
    base, manager = _compat.diffusers_hook_state()
    assert isinstance(base, type) and hasattr(manager, "set_context")


def test_torch_compile_names_and_limits():
    assert "default" in _compat.inductor_modes()
    assert "inductor" in _compat.compile_backends() and "aot_eager" not in _compat.compile_backends()  # debug tag
    assert set(_compat.compile_backends()) < set(_compat.compile_backends(all_tags=True)) and "aot_eager" in _compat.compile_backends(True)
    with _compat.recompile_limit(3):
        compiled = torch.compile(lambda x: x * 2, fullgraph=True, backend=_compat.compile_backend("eager", None))
        assert torch.equal(compiled(torch.ones(2)), torch.full((2,), 2.0))


def test_diffusers_hook_registry_helpers_answer_as_used():
    """The registry lookups, the stateful flag, the relinking removal and the registry's clean-up."""
    from diffusers.hooks import HookRegistry, ModelHook

    class Count(ModelHook):
        _is_stateful = True

        def __init__(self, add: float) -> None:
            super().__init__()
            self.add, self.resets = add, 0

        def post_forward(self, module, output):
            return output + self.add

        def reset_state(self, module):
            self.resets += 1
            return module

    layer = torch.nn.Identity()
    assert _compat.hook_registry(layer) is None and _compat.hook_order(layer) == []
    registry = HookRegistry.check_if_exists_or_initialize(layer)
    first, second = Count(1.0), Count(10.0)
    registry.register_hook(first, "first")
    registry.register_hook(second, "second")
    assert _compat.hook_registry(layer) is registry and _compat.hook_order(layer) == ["first", "second"]
    assert _compat.is_stateful(first) and not _compat.is_stateful(ModelHook())
    assert float(layer(torch.zeros(()))) == 11.0
    _compat.remove_hook_relinking(registry, "first")  # the hook after it keeps running
    assert _compat.hook_order(layer) == ["second"] and float(layer(torch.zeros(()))) == 10.0
    _compat.hooks_changed(layer)  # no error on any release
    registry.remove_hook("second", recurse=False)
    _compat.drop_hook_registry(layer)
    assert _compat.hook_registry(layer) is None


def test_reset_stateful_hooks_reaches_a_hook_below_and_skips_a_model_without_one():
    from diffusers.hooks import HookRegistry, ModelHook

    from rasfw.embedded.models.pipeline import build_pipeline

    class Stateful(ModelHook):
        _is_stateful = True
        resets = 0

        def reset_state(self, module):
            self.resets += 1
            return module

    transformer = build_pipeline().transformer  # a CacheMixin model, as diffusers' are
    hook = Stateful()
    HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0]).register_hook(hook, "stateful")
    _compat.reset_stateful_hooks(transformer)
    assert hook.resets == 1
    _compat.reset_stateful_hooks(torch.nn.Linear(2, 2))  # no CacheMixin: nothing to do, no error
