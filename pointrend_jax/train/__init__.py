"""Training, shared by every task: `loop.train(config, workdir)` and its pieces, read top to
bottom: `state` (mesh, shardings, train state), `optimizer`, `step` (the jitted step),
`writer` (metrics and pictures), `loop`."""
from pointrend_jax.train.loop import train

__all__ = ["train"]
