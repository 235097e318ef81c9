"""The central server of the national lottery: protocol, storage, draw, workers and supervisor."""
