"""Statistics: per-language sums of neuron activations and relevance, and the collection that fills them."""
