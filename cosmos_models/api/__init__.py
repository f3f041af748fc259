"""The HTTP kit (FastAPI): the dashboard page and its live data."""
