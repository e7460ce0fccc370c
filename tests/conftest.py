import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated data sets are cached in a per-session folder, never in the user's home."""
    monkeypatch.setenv("MINIGEN_CACHE", str(tmp_path_factory.getbasetemp() / "minigen-cache"))
