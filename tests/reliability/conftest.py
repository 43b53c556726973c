import pytest


@pytest.fixture
def cli_cache(tmp_path, monkeypatch):
    r"""A fresh processed-data cache and no ``PYG_FEWSHOT_DEBUG``, so a CLI
    test sees exactly what a user's first run sees."""
    monkeypatch.setenv('PYG_FEWSHOT_HOME', str(tmp_path / 'cache'))
    monkeypatch.delenv('PYG_FEWSHOT_DEBUG', raising=False)
