"""Test-wide guards: DDS stays on loopback in a domain of this run's own, whatever the caller set; torch
runs one thread per process (measured: with 2 threads on 2 cores, a tiny-model update took 5 s instead of
14 ms as soon as another process kept one core busy — OpenMP threads spin-waiting on each other)."""
import os
import random
import tempfile

# Set before anything imports rclpy: Fast DDS reads these when the first context starts.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ.setdefault('OMP_NUM_THREADS', '1')
# The nodes' per-user adapter signing key: one for this test run, never the user's own.
os.environ['ADAWM_KEY_FILE'] = os.path.join(tempfile.mkdtemp(prefix='adawm_test_key_'), 'adapter.key')


import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
    """An untrained `tiny` agent for the default task, with a replay summary of 100 scripted steps:
    for the tests of plumbing (nodes, launch, bags), where what matters is that it loads and runs."""
    from adawm_planner.experiments.pretrain import save_untrained
    return save_untrained(tmp_path_factory.mktemp('ckpt') / 'tiny', 'tiny', scripted_steps=100)


@pytest.fixture(scope='session')
def bench_module():
    """load('bench_x'): bench/bench_x.py as a module (the benches are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / 'bench' / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
