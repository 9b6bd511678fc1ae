"""The public API resolves, and the core does not import the layers above it."""

import subprocess
import sys

import pytest

import gtlkit


@pytest.mark.parametrize("name", [n for n in gtlkit.__all__ if n != "__version__"])
def test_every_public_name_resolves(name):
    assert getattr(gtlkit, name) is not None


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError):
        gtlkit.no_such_thing  # noqa: B018


def test_core_does_not_import_training_experiments_or_cli():
    code = (
        "import sys, gtlkit.sampling, gtlkit.processes, gtlkit.losses, gtlkit.oracle, "
        "gtlkit.guidance.estimators\n"
        "bad = [m for m in sys.modules if m.startswith(('gtlkit.training', 'gtlkit.experiments', "
        "'gtlkit.cli'))]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_package_is_typed_and_the_contracts_are_protocols():
    from pathlib import Path

    import torch

    assert (Path(gtlkit.__file__).parent / "py.typed").is_file()
    oracle_like = lambda x, t: torch.zeros(x.shape[0])  # noqa: E731
    assert isinstance(oracle_like, gtlkit.LogRatio) and isinstance(oracle_like, gtlkit.Denoiser)
    assert not isinstance(3, gtlkit.LogRatio)
    stats = gtlkit.SampleStats(ratio_rows=5)
    assert stats["ratio_rows"] == 5 and dict(stats)["ratio_rows"] == 5
    assert set(gtlkit.SAMPLERS) >= {"planned", "ancestral", "ctmc"}
