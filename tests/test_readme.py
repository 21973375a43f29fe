"""The README's code examples run as written."""
import os
import re

import jax
import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks(section):
    text = open(README).read()
    start = text.index(section)
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_wrapping_your_own_model_example_runs(np_rng):
    (code,) = python_blocks("## Put PointRend on your own model")
    scope = {"key": jax.random.key(0),
             "images": np_rng.integers(0, 256, size=(2, 64, 64, 3)).astype(np.uint8)}
    exec(code, scope)
    assert scope["train_out"]["point_logits"].shape == (2, 512, 5)
    assert scope["pred"]["logits"].shape == (2, 64, 64, 5)
    assert len(scope["pred"]["points"]) == 4


def test_point_sample_example_runs():
    (code,) = python_blocks("## What is here")
    scope = {}
    exec(code, scope)
    assert scope["sampled"].shape == (2, 1024, 256)
