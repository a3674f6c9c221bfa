"""The offline demo: procedural egocentric source, demo dataset builder, demo evaluator."""
