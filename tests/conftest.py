"""Test-wide setup: offline model hubs and a private teacher cache."""
import os

# Set before anything imports huggingface_hub, which reads it once: tests never wait on a hub.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_teacher_cache(tmp_path_factory):
    """No test reads or fills the user's ~/.cache/effrank-bench; tests share one tmp cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFRANK_BENCH_CACHE", str(tmp_path_factory.mktemp("teacher-cache")))
        yield
