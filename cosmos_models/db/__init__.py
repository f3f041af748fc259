"""How the database is reached: the one connection, table handles, JSON filters, migrations."""
