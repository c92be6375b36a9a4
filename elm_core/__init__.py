"""ELM Lab's library: the ELM Network, its parameter budget, data, training, the results store and analysis."""
