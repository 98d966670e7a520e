from pathlib import Path

import pytest

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
