"""The kernel-mode switch: environment variable, context manager precedence, bad values."""

import pytest

from sciformer import kernels
from sciformer.errors import SciformerError


def test_default_is_auto_and_env_selects(monkeypatch):
    monkeypatch.delenv(kernels.ENV, raising=False)
    assert kernels.mode() == "auto"
    monkeypatch.setenv(kernels.ENV, " Reference ")
    assert kernels.mode() == "reference"
    assert not kernels.compiled_enabled()
    monkeypatch.setenv(kernels.ENV, "compile")
    assert kernels.compiled_enabled()


def test_context_manager_wins_over_env_and_nests(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "compile")
    with kernels.use("reference"):
        assert kernels.mode() == "reference" and not kernels.compiled_enabled()
        with kernels.use("auto"):
            assert kernels.mode() == "auto"
        assert kernels.mode() == "reference"
    assert kernels.mode() == "compile"


def test_bad_mode_names_the_switch(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "fast")
    with pytest.raises(SciformerError, match="SCIFORMER_KERNELS='fast'.*reference, auto, compile"):
        kernels.mode()
    with pytest.raises(SciformerError, match="kernels.use"):
        with kernels.use("triton"):
            pass


def test_compiled_enabled_is_false_and_traceable_inside_a_full_graph_compile():
    """Inside torch.compile(fullgraph=True) the check answers False without reading the mode's ContextVar
    (which dynamo cannot trace): whole scOT stages compile in mode ``compile``."""
    import torch

    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        return x + 1 if kernels.compiled_enabled() else x - 1

    with kernels.use("compile"):
        assert f(torch.zeros(1)).item() == -1.0
