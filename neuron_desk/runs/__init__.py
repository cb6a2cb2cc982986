"""Use cases over an endpoint: run options from a profile (`options`), one run of explain and
score with provenance (`run`), estimates before sending anything (`estimate`), and batches of
many neurons, resumable (`batch`)."""
