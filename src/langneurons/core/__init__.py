"""Core: models, neuron sites, artifacts, errors, caches: what every other layer builds on."""
