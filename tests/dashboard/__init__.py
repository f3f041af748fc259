"""Tests of the dashboard: its live data over HTTP and the page in a real browser."""
