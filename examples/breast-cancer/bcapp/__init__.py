"""An outside Flower app that adopts election coding: its own model, loss and data."""
