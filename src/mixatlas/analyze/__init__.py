"""Analyses of finished runs: proxy-to-target rank transfer and steps-to-loss sample efficiency."""
