"""pytest plugin: a test that pytest-timeout has failed stops blocking the run.

pytest-timeout fails a test at --timeout seconds by raising in the main
thread, but a test waiting in utils.parallel_function_calls then waits on in
the thread pool's shutdown for its requests, whose own timeout is 600 s. A
few seconds after pytest-timeout fires, this kills the test's servers, so
those requests end at once. It acts only on a test already failed, so it
changes no result (and is not part of the peer result's fingerprint).
"""

import threading

import pytest

import utils

GRACE_S = 5


def _kill_servers():
    for server in list(utils.server_instances):
        proc = server.process
        if proc is not None and proc.poll() is None:
            print(f"compat_timeout: test past its timeout, killing server pid={proc.pid}")
            proc.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    timeout = item.config.getoption("timeout", None)
    timer = None
    if timeout:
        timer = threading.Timer(float(timeout) + GRACE_S, _kill_servers)
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
