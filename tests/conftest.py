import os
from pathlib import Path

import pytest

# One thread per test process, set before torch loads (here, and inherited by the CLI subprocesses
# some tests start): per-item values then do not depend on the machine's core count, and several
# test runs sharing a small machine do not oversubscribe it (OpenMP threads spin while they wait).
# Export OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOFU_DIR = SHARED / "data" / "tofu"
TOFU_LOGS = SHARED / "data" / "tofu_logs"


@pytest.fixture(scope="session")
def tokenizer():
    from uld.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def tofu_dir():
    if not TOFU_DIR.is_dir():
        pytest.skip(f"TOFU mirror not found at {TOFU_DIR} (shared data absent)")
    return TOFU_DIR


@pytest.fixture
def tofu_logs():
    if not TOFU_LOGS.is_dir():
        pytest.skip(f"TOFU reference logs not found at {TOFU_LOGS} (shared data absent)")
    return TOFU_LOGS
