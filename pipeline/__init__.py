"""Wiring and running: the CLI, configuration, runners, and the demo."""
