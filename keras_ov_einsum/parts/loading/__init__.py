"""keras-hub's preset loading and keras's saving: no random initial values,
mapped weights, cached skip sets, untracked vocabularies, quantization
configs, dtype policy lookups."""
