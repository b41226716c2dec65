"""Proof that the converted checkpoints are the original networks: ImageNet predictions on photos.

scikit-learn's bundled ``china.jpg`` is a Chinese palace (ImageNet class 698, ``palace``) and
scikit-image's ``coffee`` is a cup of espresso (967, ``espresso``). Both photos go through the
worker's own decoding (:func:`schemas.preprocessing.decode_photo`: shorter side to 224, centre
crop), then through the converted classifier. A wrong padding, epsilon, weight layout or input
scaling changes these predictions.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.preprocessing import PreprocessingSpec, decode_photo
from trainer.backbones import PretrainedWeightsUnavailable, build_classifier

REPO_ROOT = Path(__file__).resolve().parents[3]
PALACE, ESPRESSO = 698, 967
OFFLINE_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")


def _as_model_input(pixels: np.ndarray) -> np.ndarray:
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    return decode_photo(encoded.getvalue(), PreprocessingSpec(input_size=224)).astype(np.float32)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """china.jpg and coffee as a float32 batch (2, 224, 224, 3) in 0..255."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    return np.stack(
        [_as_model_input(load_sample_image("china.jpg")), _as_model_input(skimage.data.coffee())]
    )


@pytest.fixture(scope="module", params=OFFLINE_BACKBONES)
def classifier_logits(request: pytest.FixtureRequest, photos: np.ndarray) -> tuple[str, np.ndarray]:
    name = request.param
    try:
        model = build_classifier(name, "imagenet")
    except PretrainedWeightsUnavailable as exc:
        pytest.skip(f"{name} ImageNet checkpoint not obtainable here: {exc}")
    return name, np.asarray(model.predict(photos, verbose=0))


def test_palace_photo_is_classified_as_palace(classifier_logits: tuple[str, np.ndarray]) -> None:
    name, logits = classifier_logits
    assert int(np.argmax(logits[0])) == PALACE, f"{name}: top-5 {np.argsort(-logits[0])[:5]}"


def test_espresso_photo_is_classified_as_espresso(
    classifier_logits: tuple[str, np.ndarray],
) -> None:
    name, logits = classifier_logits
    assert int(np.argmax(logits[1])) == ESPRESSO, f"{name}: top-5 {np.argsort(-logits[1])[:5]}"


_JAX_SNIPPET = """
import json, sys
import keras, numpy as np
from trainer.backbones import build_classifier
assert keras.backend.backend() == "jax", keras.backend.backend()
photos = np.load(sys.argv[1])
for name in json.loads(sys.argv[2]):
    np.save(f"{sys.argv[3]}/{name}.npy", np.asarray(build_classifier(name, "imagenet").predict(photos, verbose=0)))
"""


@pytest.mark.slow
def test_jax_backend_gives_the_same_logits_as_tensorflow(
    classifier_logits: tuple[str, np.ndarray], photos: np.ndarray, tmp_path: Path
) -> None:
    """The same converted network, built and run by Keras on JAX in a fresh process."""
    name, tensorflow_logits = classifier_logits
    np.save(tmp_path / "photos.npy", photos)
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO_ROOT),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _JAX_SNIPPET,
            str(tmp_path / "photos.npy"),
            json.dumps([name]),
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jax_logits = np.load(tmp_path / f"{name}.npy")
    np.testing.assert_allclose(jax_logits, tensorflow_logits, atol=1e-4, rtol=1e-4)
