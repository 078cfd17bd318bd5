"""Objectives: what a trial evaluates (proxy training, a user command, a pool of finished runs, analytic)."""
