"""Results: frozen, versioned result types, their loaders and upgraders, the SQLite history, errors, units. No torch."""
