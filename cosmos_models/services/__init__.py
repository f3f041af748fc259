"""What apps do with the data: lifecycle, progress tracking, queries, following, maintenance."""
