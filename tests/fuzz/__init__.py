"""Coverage-guided fuzz harnesses (atheris) for `make fuzz`; their seed corpus replays in `make test`."""
