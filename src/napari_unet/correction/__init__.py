"""Learning from a person's corrections without overwriting them."""
