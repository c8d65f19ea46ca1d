"""Class names next to the TensorBoard explanations (``training.evaluate``)."""
import types

import numpy as np

from bcos_jax.data import imagenet_classes
from bcos_jax.training import evaluate as ev


def test_imagenet_wordnet_ids_become_readable_names():
    wnids = [f"n{i:08d}" for i in range(1000)]
    assert ev.display_class_names(wnids, 1000) == imagenet_classes()
    assert ev.display_class_names(None, 1000)[0] == imagenet_classes()[0]
    assert ev.display_class_names(("cat", "dog"), 2) == ("cat", "dog")
    assert ev.display_class_names(None, 10) is None


def test_captions_name_the_explained_and_the_predicted_class():
    ex = types.SimpleNamespace(targets=np.array([1, 0]),
                               logits=np.array([[0.1, 2.0, -1.0], [0.5, -0.2, 3.0]]))
    text = ev.explanation_captions(ex, ("circle", "square", "triangle"))
    assert text.split("  \n") == [
        "row 0: explained 1 (square); predicted 1 (square), logit 2",
        "row 1: explained 0 (circle); predicted 2 (triangle), logit 3",
    ]
    assert "row 1: explained 0; predicted 2, logit 3" in ev.explanation_captions(ex, None)
