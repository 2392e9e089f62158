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
