"""The fast scoring path: precision auto, compiled backbone, padded batches, glibc tuning."""
import numpy as np
import pytest
import torch

from zoobot.allocator import allocator_name, tune_glibc_malloc
from zoobot.models import create_model
from zoobot.precision import INFERENCE_PRECISIONS
from zoobot.predict import BatchScorer, bf16_supported, compile_pays, resolve_precision

SIZE = 32


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("zoobot-2019", "smooth-or-featured", channels=3, dropout_rate=0.3, image_size=SIZE).eval()


def test_auto_precision_follows_the_hardware():
    assert "auto" in INFERENCE_PRECISIONS
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_supported("cpu") else "32")
    assert resolve_precision("bf16-mixed", "cpu") == "bf16" and resolve_precision("32-true", "cpu") == "32"
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("16-mixed", "cpu")


def test_auto_compile_only_for_large_sets():
    assert not compile_pays("cpu", 64, 1000) and compile_pays("cpu", 64, 1_000_000)


def test_glibc_tuning_is_idempotent_and_respects_a_preloaded_allocator(monkeypatch):
    tune_glibc_malloc()
    assert tune_glibc_malloc() is False  # already done (or not glibc)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert allocator_name() == "tcmalloc"


def test_scorer_masks_follow_the_seed_and_leave_eval_mode(model):
    images = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8)
    scorer = BatchScorer(model, n_samples=4, precision="32", batch_size=8)
    torch.manual_seed(1)
    first = scorer(images)
    torch.manual_seed(1)
    again = scorer(images.numpy())
    assert first.shape == (5, 4, 1) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[:, 0], first[:, 1])  # distinct dropout samples
    assert model.training is False
    with pytest.raises(ValueError, match="needs batch_size"):
        BatchScorer(model, compile=True)


@pytest.mark.slow
def test_compiled_scorer_matches_eager(model):
    images = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8)
    torch.manual_seed(1)
    expected = BatchScorer(model, n_samples=4, precision="32", batch_size=8)(images)
    compiled = BatchScorer(model, n_samples=4, precision="32", batch_size=8, compile=True)
    torch.manual_seed(1)
    found = compiled(images)  # 5 rows padded to 8 inside the compiled pass; masks drawn for 5
    assert compiled.compile_seconds is not None and compiled.compile_seconds > 0
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5)
