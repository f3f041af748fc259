"""What a row is: column types, the validated base, the tables, API shapes, status words."""
