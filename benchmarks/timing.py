"""Wall-clock timing shared by the benchmarks."""
import statistics
import time


def timeit(fn, repeats):
    """Median wall time of `fn()` in ms over `repeats` calls, after one warm-up call (which
    compiles a jitted function)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
