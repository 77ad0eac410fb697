"""Settings are split by environment: base (everything, from the environment), dev, test, production."""
