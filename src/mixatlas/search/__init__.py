"""Stage 2: the search over mixtures (study storage, optimizers, and the loop that joins them)."""
