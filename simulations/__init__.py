"""The ServerApp, the in-process grid, experiment configs, the sweep runner and plots."""
