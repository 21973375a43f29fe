"""Input pipelines on grain: sharded, shuffled, augmented, checkpointable.

``train_iterator`` is an endless stream of local batches cut from one global stream: the
source shuffled with the run's seed (a new order every epoch), repeated, and each element
augmented with a generator seeded from the seed and the element's position in the stream.
Global batch ``j`` is stream elements ``[j * B, (j + 1) * B)``; process ``p`` of ``P`` loads
only its rows ``[p * B / P, (p + 1) * B / P)`` of it, i.e. it reads only its own examples.
So the global batches the devices see are the same for 1 process or many, and a run is the
same batch for batch whenever it is started with the same seed. The position is one number,
the batches consumed (= the train step): ``start_batch`` resumes there on any topology; the
iterator's ``get_state()``/``set_state()`` do the same for one process.

``eval_examples`` yields a process's share of the validation set, unbatched, in a fixed order.

Shapes: B global batch size; B / P local batch size; h, w crop size.
"""
from __future__ import annotations

from typing import Any, Iterator

import grain


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"Need 0 <= process_index < process_count, got process_index={process_index}, "
                         f"process_count={process_count}.")


def train_iterator(source, *, global_batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1, transform, start_batch: int = 0,
                   num_threads: int = 2, prefetch_batches: int = 2,
                   num_workers: int = 0) -> grain.DatasetIterator:
    """Endless iterator of local batches: `transform`'s keys, each with a leading B/P axis
    (the semantic transform: {"image": uint8 (B/P, h, w, 3), "label": uint8 (B/P, h, w)}).

    Args:
      source: random-access examples; ``len`` and ``[i]``.
      global_batch_size: B, summed over processes; must be divisible by process_count.
      seed: the run's data seed (shuffle order and augmentation).
      process_index, process_count: which rows of each global batch this process loads.
      transform: a picklable callable ``(example, rng) -> dict of arrays`` of equal shapes
        for every example (the task's ``train_transform``).
      start_batch: the first global batch to produce (the batches already consumed).
      num_threads, prefetch_batches: threads and buffer that prepare batches ahead.
      num_workers: > 0 moves the work into that many worker processes (still deterministic).

    Returns:
      A grain ``DatasetIterator``: ``next(it)``, ``it.get_state()``, ``it.set_state(state)``.
    """
    _check_process(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                         f"process_count={process_count} (each process loads an equal share).")
    if len(source) == 0:
        raise ValueError("the training source has no examples")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    local_batch_size = global_batch_size // process_count

    # shuffle() folds the epoch into its seed, so repeat() gives a new order every epoch;
    # random_map seeds each element's generator from the seed and its index in the endless
    # global stream, so an image is augmented differently in each epoch, and identically
    # whichever process loads it. Batching by local batches and taking every P-th from
    # process_index gives process p rows [p*B/P, (p+1)*B/P) of each global batch.
    ds = (grain.MapDataset.source(source)
          .seed(int(seed))
          .shuffle()
          .repeat(None)
          .random_map(transform)
          .batch(local_batch_size, drop_remainder=True))
    ds = ds[process_index::process_count][start_batch:]
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
    it_ds = ds.to_iter_dataset(read)
    if num_workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it_ds)


def _eval_indices(source, process_index: int, process_count: int, max_examples: int | None) -> range:
    _check_process(process_index, process_count)
    return range(len(source))[:max_examples][process_index::process_count]


def eval_examples(source, *, process_index: int = 0, process_count: int = 1,
                  max_examples: int | None = None) -> Iterator[dict[str, Any]]:
    """This process's validation examples, unbatched: of the first ``max_examples`` (None:
    all) over all processes, indices process_index, +process_count, ..."""
    for index in _eval_indices(source, process_index, process_count, max_examples):
        yield source[index]


def num_eval_examples(source, *, process_index: int = 0, process_count: int = 1,
                      max_examples: int | None = None) -> int:
    """How many examples ``eval_examples`` yields for this process."""
    return len(_eval_indices(source, process_index, process_count, max_examples))
