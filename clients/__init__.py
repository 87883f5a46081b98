"""Flower ClientApps of fl-election: the honest worker and the Byzantine mods."""
