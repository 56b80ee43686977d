"""Pipeline stages: plain Python classes with setup() / process(batch) / flush(). No Ray here."""
