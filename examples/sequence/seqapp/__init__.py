"""An outside Flower app with a sequence model: tied weights, a 1-D conv, dict samples."""
