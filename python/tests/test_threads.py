"""Runs from several Python threads at once, and the GIL released while a model runs."""
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import carbide
from conftest import assert_close_to_ort, zoo_files
from models import matmul_chain


def test_concurrent_runs_match_serial_runs():
    sess = carbide.InferenceSession(matmul_chain(n=128, steps=8))
    rng = np.random.default_rng(1)
    feeds = [rng.standard_normal((4 + i, 128)).astype(np.float32) for i in range(16)]
    serial = [sess.run(None, {"x": x})[0] for x in feeds]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda x: sess.run(None, {"x": x})[0], feeds))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_concurrent_zoo_runs():
    path, inputs, expected = zoo_files("squeezenet1_1")
    sess = carbide.InferenceSession(path)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: sess.run(None, inputs), range(4)))
    for outputs in results:
        for out_name, ours in zip(expected, outputs):
            assert_close_to_ort("squeezenet1_1", out_name, ours, expected[out_name])


def test_gil_is_released_while_running():
    """While one thread runs a model, another executes Python code.

    With a switch interval far longer than the test, a thread holding the GIL
    keeps it until it blocks or releases it. The main thread blocks on
    `started`; the worker sets it and calls run(). Only if run() releases the
    GIL can the main thread loop while the run is still in progress; if run()
    held it, `finished` would be set before the main thread ran again."""
    sess = carbide.InferenceSession(matmul_chain(n=256, steps=32))
    x = np.ones((128, 256), np.float32)
    sess.run(None, {"x": x})  # warm up
    started, finished = threading.Event(), threading.Event()

    def work():
        started.set()
        sess.run(None, {"x": x})
        finished.set()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        worker = threading.Thread(target=work)
        worker.start()
        started.wait()
        ticks = 0
        while not finished.wait(0.0005):  # blocks briefly, handing the GIL back to the worker
            ticks += 1
        worker.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert ticks > 0, "the main thread could not run while the model was running: run() holds the GIL"


def test_concurrent_module_runs_match_serial_runs():
    module = carbide.compile(matmul_chain(n=128, steps=8))
    rng = np.random.default_rng(2)
    feeds = [rng.standard_normal((3 + i, 128)).astype(np.float32) for i in range(12)]
    serial = [module.run({"x": x})["y"] for x in feeds]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(lambda x: module.run({"x": x})["y"], feeds))
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
