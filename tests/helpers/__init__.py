"""Helpers shared by the test files (importable as `helpers.<module>`: pyproject's pytest
`pythonpath` puts tests/ on sys.path). Fixtures stay in tests/conftest.py."""
