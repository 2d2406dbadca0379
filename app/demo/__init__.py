"""The one-machine demo: embedded stack, demo org, synthetic traffic."""
