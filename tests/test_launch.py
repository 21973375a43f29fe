"""The test launcher never lets a run outlive its timeout and reports every process."""
import sys
import time

import launch

SLEEPER = ("import sys, time; print('process {i} started', file=sys.stderr, flush=True); "
           "time.sleep(600)")
FAILER = "import sys; print('process {i} gives up', file=sys.stderr); sys.exit(3)"


def python(code, i):
    return [sys.executable, "-c", code.format(i=i)]


def test_a_failure_ends_the_others_after_the_grace_and_every_stderr_is_reported():
    start = time.monotonic()
    results = launch.run([python(FAILER, 0), python(SLEEPER, 1)], devices=1, cwd=".",
                         timeout=300, grace=2)
    assert time.monotonic() - start < 30
    assert results[0].returncode == 3 and not results[0].killed
    assert results[1].killed and results[1].returncode != 0
    report = launch.report(results)
    assert "process 0 gives up" in report and "process 1 started" in report
    assert "--- process 0: exit status 3" in report and "--- process 1: killed (hung)" in report


def test_hung_processes_are_killed_at_the_timeout_with_their_stacks():
    start = time.monotonic()
    results = launch.run([python(SLEEPER, i) for i in range(2)], devices=1, cwd=".", timeout=3)
    assert time.monotonic() - start < 30
    assert all(r.killed for r in results)
    for i, r in enumerate(results):  # faulthandler's dump, from the SIGABRT before the kill
        assert r.stderr.startswith(f"process {i} started\nFatal Python error: Aborted")
        assert '(most recent call first):\n  File "<string>", line 1 in <module>' in r.stderr
